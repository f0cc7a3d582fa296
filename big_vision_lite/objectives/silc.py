"""SILC (arXiv 2310.13355) as SigLIP 2 trains it: local-to-global self-distillation. The
student's image tower embeds `config.teacher.local_views` local views of each image (pooled, as
the contrastive embedding is, before the tower's projection); a separate projection head
(`silc/...`) maps them to `head_dim` outputs; each is matched to the EMA teacher's output on the
image's global view (teacher tower and teacher head), centred and sharpened, with DINO's
cross-entropy. The loss is the mean over local views, then over examples. Views, head, loss and
their defaults: objectives/teacher.py.
"""

import jax
import jax.numpy as jnp

from big_vision_lite.objectives import Term, teacher as teacher_lib


class Silc(Term):
  """Local views (student) to the global view (EMA teacher); see the module docstring."""

  name = "silc"
  teacher = ("img", "silc")
  params = ("silc",)
  OPTIONS = dict(teacher_lib.HEAD_OPTIONS)

  def __init__(self, config, settings, mesh=None):
    super().__init__(config, settings, mesh)
    teacher_lib.check_head(self.name, settings)
    self.tower = teacher_lib.image_tower(config)
    self.head = teacher_lib.head_of(settings)
    self.local = (config.teacher.local_views, teacher_lib.local_size(config),
                  tuple(config.teacher.local_area))

  def init(self, rng, outputs):
    width = outputs["img"]["pre_logits"].shape[-1]
    return {"silc": self.head.init(rng, jnp.zeros((1, width)))["params"]}

  def buffers(self):
    return {"center": jnp.zeros((self.settings["head_dim"],), jnp.float32)}

  def prepare(self, batch, rng):
    kg, kl = jax.random.split(rng)
    num, size, area = self.local
    return {**teacher_lib.global_view(self.config, batch, kg),
            "view_local": teacher_lib.crops(batch["image"], kl, num, size, area)}

  def teach(self, teacher, buffers, batch):
    shared = teacher_lib.global_outputs(self.tower, teacher, batch)
    logits = self.head.apply({"params": teacher["silc"]}, shared["teacher_pooled"])  # [B, K]
    target, buffers = teacher_lib.sharpened(logits, buffers["center"], self.settings)
    return {**shared, "silc_target": target}, buffers

  def loss(self, params, batch, outputs):
    del outputs
    views = batch["view_local"]  # [B, V, s, s, 3]
    b, v = views.shape[:2]
    _, out = self.tower.apply({"params": params["img"]}, views.reshape(b * v, *views.shape[2:]),
                              any_size=True)
    logits = self.head.apply({"params": params["silc"]}, out["pre_logits"])
    ce = teacher_lib.cross_entropy(batch["silc_target"][:, None],
                                   logits.reshape(b, v, -1), self.settings["student_temperature"])
    target = batch["silc_target"]
    entropy = -jnp.sum(target * jnp.log(target + 1e-20), -1)
    return jnp.mean(ce), {"silc_teacher_entropy": jnp.mean(entropy)}
