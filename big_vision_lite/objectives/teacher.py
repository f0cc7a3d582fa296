"""What the self-distillation terms (`silc`, `tips`) share: the EMA teacher, the multi-crop
views, the projection head and the DINO form of loss.

The teacher (`state['teacher']`) is a copy of the parameters the terms read from it (the image
tower `img` and the terms' heads), updated after every applied step as

  teacher <- momentum * teacher + (1 - momentum) * student

with a fixed momentum (`config.teacher.momentum`; SILC keeps it fixed rather than annealing it
as DINO does). It is sharded like the parameters it copies, checkpointed with the state, and no
gradient reaches it (the update step computes its outputs outside the differentiated function).
It is copied from the student at the step the terms that read it start; a step that is not
applied (non-finite) does not move it either.

Views (`config.teacher`): each step cuts, from every example's `image`, one global view at the
model's resolution (the teacher's; `global_area` of the image area) and `local_views` local views
at `local_size` pixels (the student's; `local_area`), random aspect ratio in [3/4, 4/3] and a
random left-right flip, drawn from (seed, step) over the whole global batch. Ranges: SILC's
(global 0.4-1.0, local 0.05-0.4 of the area; SigLIP 2: 8 local views). The views are cut on the
device from the batch's image (every input source gets them; the host sends nothing more), so
local views are resampled from the model-resolution image, not from the original file.

The head is DINO's (arXiv 2104.14294): an MLP (`head_layers` layers, GELU, `head_hidden` wide)
to a `head_bottleneck` vector, L2-normalised, then a weight-normalised linear layer without bias
to `head_dim` outputs. The loss is DINO's cross-entropy H(t, s) = -sum_k t_k log s_k between
the teacher's centred, sharpened distribution t = softmax((z_t - c) / teacher_temperature) and
the student's s = softmax(z_s / student_temperature); the centre c is an EMA of the teacher's
mean output (`center_momentum`). Defaults are DINO's: temperatures 0.04 (teacher) and 0.1
(student), centre momentum 0.9, head 3 layers of 2048, bottleneck 256, 65536 outputs. Neither
the SigLIP 2 nor the SILC paper gives these values.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite import schema
from big_vision_lite.models.two_towers import DTYPES, TwoTowers, l2_normalize
from big_vision_lite.schema import ConfigError

RATIO = (3 / 4, 4 / 3)  # Aspect ratios (width / height) of the crops, as Inception's.

HEAD_OPTIONS = dict(
    head_dim=schema.Int(65536, "outputs of the projection head (DINO: 65536)", positive=True),
    head_hidden=schema.Int(2048, "width of the head's MLP (DINO: 2048)", positive=True),
    head_bottleneck=schema.Int(256, "the head's L2-normalised bottleneck (DINO: 256)",
                               positive=True),
    head_layers=schema.Int(3, "MLP layers of the head before the bottleneck (DINO: 3)",
                           positive=True),
    teacher_temperature=schema.Float(0.04, "sharpening of the teacher's outputs (DINO: 0.04)",
                                     positive=True),
    student_temperature=schema.Float(0.1, "temperature of the student's outputs (DINO: 0.1)",
                                     positive=True),
    center_momentum=schema.Float(0.9, "EMA momentum of the centre of the teacher's outputs "
                                 "(DINO: 0.9)", min=0),
)


class ProjectionHead(nn.Module):
  """DINO's head: MLP -> L2-normalised bottleneck -> weight-normalised linear [..., dim]."""

  dim: int
  hidden: int
  bottleneck: int
  layers: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    for i in range(self.layers - 1):
      x = nn.gelu(nn.Dense(self.hidden, name=f"Dense_{i}")(x), approximate=False)
    x = l2_normalize(nn.Dense(self.bottleneck, name="bottleneck")(x))
    v = self.param("last", nn.initializers.lecun_normal(), (self.bottleneck, self.dim))
    return x @ (v * jax.lax.rsqrt(jnp.sum(v * v, axis=0, keepdims=True) + 1e-12))


def head_of(settings) -> ProjectionHead:
  return ProjectionHead(settings["head_dim"], settings["head_hidden"],
                        settings["head_bottleneck"], settings["head_layers"])


def check_head(name: str, settings) -> None:
  if not 0 <= settings["center_momentum"] < 1:
    raise ConfigError(f"objectives.{name}.center_momentum={settings['center_momentum']} must "
                      "be in [0, 1)")


def targets(logits: jax.Array, center: jax.Array, temperature: float) -> jax.Array:
  """The teacher's centred, sharpened distribution over the head's outputs."""
  return jax.nn.softmax((logits - center) / temperature, axis=-1)


def next_center(center: jax.Array, logits: jax.Array, momentum: float) -> jax.Array:
  """The centre after this batch: an EMA of the teacher's mean output over every position."""
  mean = jnp.mean(logits.reshape(-1, logits.shape[-1]), axis=0)
  return momentum * center + (1 - momentum) * mean


def sharpened(logits: jax.Array, center: jax.Array, settings) -> tuple[jax.Array, dict]:
  """The teacher's centred, sharpened distribution of `logits` (a term's target), and the term's
  buffers after this step (the centre moved towards the logits' mean)."""
  return (targets(logits, center, settings["teacher_temperature"]),
          {"center": next_center(center, logits, settings["center_momentum"])})


def cross_entropy(target: jax.Array, logits: jax.Array, temperature: float) -> jax.Array:
  """H(target, softmax(logits / temperature)) over the last axis."""
  return -jnp.sum(target * jax.nn.log_softmax(logits / temperature, axis=-1), axis=-1)


def image_tower(config):
  """The student's image tower as a module of its own (applied to `params['img']`)."""
  return TwoTowers(**config.model.to_dict()).image_tower()


def patch_size(config) -> int:
  return int(image_tower(config).hparams()["patch_size"][0])


def check(config, terms) -> None:
  """The teacher settings and the terms that read the teacher, at start."""
  readers = [t for t in terms if t.teacher]
  if not readers:
    return
  s = config.teacher
  if not 0 <= s.momentum < 1:
    raise ConfigError(f"config.teacher.momentum={s.momentum} must be in [0, 1)")
  if (config.model.image.get("type") or "vit") != "vit":
    raise ConfigError(f"objectives {[t.name for t in readers]} read the image tower's patches "
                      "and views: use a ViT image tower (model.image.type='vit')")
  if config.lora:
    raise ConfigError(f"objectives {[t.name for t in readers]} keep an EMA teacher of the image "
                      "tower, which LoRA adapters would bypass: set config.lora=None")
  first = min(readers, key=lambda t: t.start)
  for t in readers:
    if t.start != first.start:
      raise ConfigError(
          f"objectives.{t.name}.start={t.start} is later than objectives.{first.name}.start="
          f"{first.start}, which uses the EMA teacher {t.name} needs: the teacher (with every "
          "reader's head) is copied from the student when the first of them starts; give them "
          "one start")
  size, p = config.model.image.image_size, patch_size(config)
  for key in ("global_area", "local_area"):
    lo, hi = s[key]
    if not 0 < lo <= hi <= 1:
      raise ConfigError(f"config.teacher.{key}={tuple(s[key])} must be (low, high) fractions "
                        "of the image area with 0 < low <= high <= 1")
  if local_size(config) > size or s.local_area[1] > s.global_area[1]:
    raise ConfigError(f"config.teacher: local views ({local_size(config)} px, up to "
                      f"{s.local_area[1]} of the area) are larger than the global view ({size} px, "
                      f"up to {s.global_area[1]}): make local_size <= model.image.image_size and "
                      "local_area's high <= global_area's")
  if local_size(config) % p or size % p:
    raise ConfigError(f"config.teacher.local_size={local_size(config)} and image_size={size} "
                      f"must be multiples of the patch size {p}")


def local_size(config) -> int:
  """`config.teacher.local_size`, or half the image size in whole patches (at least one)."""
  if config.teacher.local_size:
    return int(config.teacher.local_size)
  p = patch_size(config)
  return max(1, round(config.model.image.image_size / 2 / p)) * p


def crops(images: jax.Array, rng: jax.Array, num: int, size: int,
          area: tuple[float, float]) -> jax.Array:
  """`num` random crops of each image [B, H, W, C] -> [B, num, size, size, C]: an area fraction
  uniform in `area`, aspect ratio log-uniform in RATIO, position uniform, resized with
  antialiased bilinear interpolation, mirrored left-right with probability 1/2."""
  b, h, w, _ = images.shape
  ka, kr, ky, kx, kf = jax.random.split(rng, 5)
  a = jax.random.uniform(ka, (b, num), minval=area[0], maxval=area[1])
  r = jnp.exp(jax.random.uniform(kr, (b, num), minval=np.log(RATIO[0]), maxval=np.log(RATIO[1])))
  ch, cw = jnp.minimum(jnp.sqrt(a / r), 1.), jnp.minimum(jnp.sqrt(a * r), 1.)  # Of the side.
  top = jax.random.uniform(ky, (b, num)) * (1 - ch)
  left = jax.random.uniform(kx, (b, num)) * (1 - cw)
  flip = jax.random.bernoulli(kf, 0.5, (b, num))

  def one(image, ch, cw, top, left, flip):
    scale = jnp.stack([size / (ch * h), size / (cw * w)])
    out = jax.image.scale_and_translate(
        image.astype(jnp.float32), (size, size, image.shape[-1]), (0, 1), scale,
        -jnp.stack([top * h, left * w]) * scale, "linear", antialias=True)
    return jnp.where(flip, out[:, ::-1], out)

  per_view = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0))
  return jax.vmap(per_view)(images, ch, cw, top, left, flip)


def global_view(config, batch: dict, rng: jax.Array) -> dict:
  """{'view_global': [B, S, S, 3]}: the teacher's view (the one already in `batch` when
  another term cut it this step)."""
  if "view_global" in batch:
    return {}
  size = config.model.image.image_size
  return {"view_global": crops(batch["image"], rng, 1, size, tuple(config.teacher.global_area))[
      :, 0]}


def global_outputs(tower, teacher: dict, batch: dict) -> dict:
  """The teacher tower's outputs on the global view, {'teacher_tokens' [B, N, D] (patches),
  'teacher_pooled' [B, D]}: computed by the first reader in a step, reused by the others (the
  update step passes `teacher_*` entries from one reader's `teach` to the next, not to the
  losses)."""
  if "teacher_tokens" in batch:
    return {k: batch[k] for k in ("teacher_tokens", "teacher_pooled")}
  _, out = tower.apply({"params": teacher["img"]}, batch["view_global"])
  return {"teacher_tokens": out["encoded"], "teacher_pooled": out["pre_logits"]}


def ema(teacher: dict, student: dict, momentum: float) -> dict:
  """momentum * teacher + (1 - momentum) * student, leaf by leaf (in place when donated)."""
  return jax.tree.map(lambda t, s: (momentum * t + (1 - momentum) * s).astype(t.dtype),
                      teacher, student)


def dtype_of(config) -> Any:
  return DTYPES[config.model.dtype_mm]
