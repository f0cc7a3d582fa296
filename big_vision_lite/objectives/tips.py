"""TIPS-style masked prediction (arXiv 2410.16512) as SigLIP 2 trains it: `mask_ratio` of the
student's embedded patches of each image's global view are replaced by a learned mask token
(`tips/mask_token`); the student's per-patch outputs at the masked positions, through a separate
projection head (`tips/head`), are matched to the EMA teacher's per-patch outputs on the same
view unmasked, centred and sharpened, with DINO's cross-entropy (the same form as `silc`). The
loss is the mean over masked patches (the same number in every image), then over examples.
Head, loss and their defaults: objectives/teacher.py.
"""

import jax
import jax.numpy as jnp

from big_vision_lite import schema
from big_vision_lite.objectives import Term, teacher as teacher_lib
from big_vision_lite.schema import ConfigError


class Tips(Term):
  """Masked patches (student) to the unmasked patches (EMA teacher); see the module docstring."""

  name = "tips"
  teacher = ("img", "tips")
  params = ("tips",)
  OPTIONS = dict(
      mask_ratio=schema.Float(0.5, "fraction of the student's patches replaced by the mask "
                              "token (SigLIP 2: 0.5), in (0, 1)", min=0),
      **teacher_lib.HEAD_OPTIONS)

  def __init__(self, config, settings, mesh=None):
    super().__init__(config, settings, mesh)
    teacher_lib.check_head(self.name, settings)
    if not 0 < settings["mask_ratio"] < 1:
      raise ConfigError(f"objectives.tips.mask_ratio={settings['mask_ratio']} must be in (0, 1) "
                        "(the fraction of patches masked; SigLIP 2: 0.5)")
    self.tower = teacher_lib.image_tower(config)
    self.head = teacher_lib.head_of(settings)
    self.patches = (config.model.image.image_size // teacher_lib.patch_size(config)) ** 2
    self.masked = max(1, round(settings["mask_ratio"] * self.patches))

  def init(self, rng, outputs):
    width = outputs["img"]["pre_logits"].shape[-1]
    return {"tips": {"head": self.head.init(rng, jnp.zeros((1, width)))["params"],
                     "mask_token": jnp.zeros((width,), jnp.float32)}}

  def buffers(self):
    return {"center": jnp.zeros((self.settings["head_dim"],), jnp.float32)}

  def prepare(self, batch, rng):
    kg, km = jax.random.split(rng)
    b = batch["image"].shape[0]
    # The masked positions of each image: the first `masked` of a random permutation, sorted.
    order = jnp.argsort(jax.random.uniform(km, (b, self.patches)), axis=1)
    return {**teacher_lib.global_view(self.config, batch, kg),
            "tips_masked": jnp.sort(order[:, :self.masked], axis=1).astype(jnp.int32)}

  def _outputs(self, params, tokens, masked):
    """The head's outputs [B, M, K] at the masked positions of the tower's tokens [B, N', D]."""
    tokens = tokens[:, -self.patches:]  # Without a class token, if any.
    picked = jnp.take_along_axis(tokens, masked[..., None], axis=1)  # [B, M, D]
    return self.head.apply({"params": params["tips"]["head"]}, picked)

  def teach(self, teacher, buffers, batch):
    shared = teacher_lib.global_outputs(self.tower, teacher, batch)
    logits = self._outputs(teacher, shared["teacher_tokens"], batch["tips_masked"])
    target, buffers = teacher_lib.sharpened(logits, buffers["center"], self.settings)
    return {**shared, "tips_target": target}, buffers

  def loss(self, params, batch, outputs):
    del outputs
    masked = batch["tips_masked"]
    mask = jnp.zeros((masked.shape[0], self.patches), bool).at[
        jnp.arange(masked.shape[0])[:, None], masked].set(True)
    _, out = self.tower.apply({"params": params["img"]}, batch["view_global"], patch_mask=mask,
                              mask_token=params["tips"]["mask_token"])
    logits = self._outputs(params, out["encoded"], masked)
    ce = teacher_lib.cross_entropy(batch["tips_target"], logits,
                                   self.settings["student_temperature"])
    return jnp.mean(ce), {}
