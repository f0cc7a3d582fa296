"""CLIP's modified ResNet image tower: images [B, H, W, 3] -> (embedding, aux dict).

Differences from a torchvision ResNet, as in the CLIP paper: a stem of three 3x3 convolutions
with an average pool instead of one 7x7 convolution and a max pool; anti-aliased strided blocks
(an average pool before the strided 1x1 convolution, and before the downsampling convolution,
whose own stride is 1); and attention pooling (the mean token, plus a learnt position embedding
over [mean, tokens], queries the feature map through one multi-head attention whose output
projection is the tower's projection).

Batch norm is a frozen per-channel affine map (`scale`, `bias`): inference with running
statistics is exactly that, so released checkpoints load with the statistics folded in
(weights.py), and from scratch each block's last scale starts at zero (the block starts as the
identity) so the tower trains without batch statistics and the trainer needs no `batch_stats`.
Parameter names follow open_clip's (`conv1`, `bn1`, `layer1_0/conv2`, `attnpool/...`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.models import layers

# name -> (blocks per stage, stem width), as in the CLIP paper's (and open_clip's) RN models.
VARIANTS = {
    "50": ((3, 4, 6, 3), 64),
    "101": ((3, 4, 23, 3), 64),
    "50x4": ((4, 6, 10, 6), 80),
    "50x16": ((6, 8, 18, 8), 96),
    "50x64": ((3, 15, 36, 10), 128),
}
HEAD_WIDTH = 64  # attention-pool channels per head, as CLIP: num_heads = 32 * width // 64


class FrozenBatchNorm(nn.Module):
  """Batch norm with fixed statistics: x * scale + bias per channel (in float32)."""

  zero_init: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H, W, C]
    c = x.shape[-1]
    init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
    scale = self.param("scale", init, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return x.astype(jnp.float32) * scale + bias


def _conv(features: int, size: int, dtype_mm: Any, name: str) -> nn.Conv:
  # torch's padding=size//2 (explicit, so strided convolutions pad as torch does).
  pad = size // 2
  return nn.Conv(features, (size, size), padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=nn.initializers.he_normal(), dtype=dtype_mm, name=name)


def _avg_pool(x: jax.Array, k: int) -> jax.Array:
  return nn.avg_pool(x, (k, k), strides=(k, k), padding="VALID") if k > 1 else x


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> (avg pool) -> 1x1 (4 x planes) residual block; strides by average pooling."""

  planes: int
  stride: int = 1
  dtype_mm: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/s, W/s, 4 planes]
    y = nn.relu(FrozenBatchNorm(name="bn1")(_conv(self.planes, 1, self.dtype_mm, "conv1")(x)))
    y = nn.relu(FrozenBatchNorm(name="bn2")(_conv(self.planes, 3, self.dtype_mm, "conv2")(y)))
    y = _avg_pool(y, self.stride)
    y = _conv(4 * self.planes, 1, self.dtype_mm, "conv3")(y)
    y = FrozenBatchNorm(zero_init=True, name="bn3")(y)
    if self.stride > 1 or x.shape[-1] != 4 * self.planes:
      x = _conv(4 * self.planes, 1, self.dtype_mm, "downsample_conv")(_avg_pool(x, self.stride))
      x = FrozenBatchNorm(name="downsample_bn")(x)
    return nn.relu(x.astype(jnp.float32) + y)


class AttentionPool(nn.Module):
  """The mean token, with learnt positions over [mean, tokens], attends over the tokens."""

  num_heads: int
  out_features: int | None = None
  zeroinit: bool = False
  dtype_mm: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, C] -> [B, out_features or C]
    _, n, c = x.shape
    x = jnp.concatenate([jnp.mean(x, axis=1, keepdims=True), x], axis=1)  # [B, 1 + N, C]
    x = x + self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(c)),
                       (1, 1 + n, c), jnp.float32)
    out_init = nn.initializers.zeros if self.zeroinit else None
    y = layers.attention(self.num_heads, self.dtype_mm, self.out_features, out_init)(x[:, :1], x)
    return y[:, 0].astype(jnp.float32)


class ResNet(nn.Module):
  """CLIP's modified ResNet: images [B, H, W, 3] -> (embedding [B, num_classes or 32 width], aux).

  `variant` is one of VARIANTS ('50', '101', '50x4', '50x16', '50x64'); `layers` (blocks per
  stage), `width` (stem width; the last stage has 32 x width channels) and `num_heads` override
  it, e.g. for tiny models. The attention pool's output projection maps to `num_classes` (CLIP's
  embedding); the aux dict holds `encoded` (the last stage's tokens [B, N, 32 width]) and
  `pre_logits` (the pooled embedding itself: the projection is part of the pooling attention).
  """

  variant: str | None = None
  layers: tuple[int, ...] | None = None
  width: int | None = None
  num_heads: int | None = None
  image_size: int | None = None  # input resolution; None: whatever the input has
  num_classes: int | None = None
  head_zeroinit: bool = False
  dtype_mm: Any = jnp.float32

  def hparams(self) -> dict[str, Any]:
    """Blocks per stage, stem width and attention-pool heads, explicit fields first."""
    hp = {}
    if self.variant is not None:
      if str(self.variant) not in VARIANTS:
        raise ValueError(f"unknown ResNet variant {self.variant!r}; known: {list(VARIANTS)}")
      hp["layers"], hp["width"] = VARIANTS[str(self.variant)]
    if self.layers is not None:
      hp["layers"] = tuple(self.layers)
    if self.width is not None:
      hp["width"] = self.width
    if "layers" not in hp or "width" not in hp:
      raise ValueError("ResNet needs a variant such as '50' or both layers and width")
    hp["num_heads"] = self.num_heads or 32 * hp["width"] // HEAD_WIDTH
    if (32 * hp["width"]) % hp["num_heads"]:
      raise ValueError(f"ResNet attention pool: {32 * hp['width']} channels (32 x width) are "
                       f"not divisible by num_heads={hp['num_heads']}")
    return hp

  @nn.compact
  def __call__(self, image: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    hp = self.hparams()
    if self.image_size is not None and image.shape[1:3] != (self.image_size,) * 2:
      raise ValueError(f"ResNet built for {self.image_size}x{self.image_size} images got "
                       f"{image.shape[1]}x{image.shape[2]}; resize the input or set image_size")
    width, dtype = hp["width"], self.dtype_mm
    x = image.astype(jnp.float32)
    x = nn.Conv(width // 2, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=nn.initializers.he_normal(), dtype=dtype, name="conv1")(x)
    x = nn.relu(FrozenBatchNorm(name="bn1")(x))
    x = nn.relu(FrozenBatchNorm(name="bn2")(_conv(width // 2, 3, dtype, "conv2")(x)))
    x = nn.relu(FrozenBatchNorm(name="bn3")(_conv(width, 3, dtype, "conv3")(x)))
    x = _avg_pool(x, 2)  # [B, H/4, W/4, width]
    for stage, blocks in enumerate(hp["layers"]):
      for i in range(blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = Bottleneck(width * 2 ** stage, stride, dtype, name=f"layer{stage + 1}_{i}")(x)
    n, h, w, c = x.shape  # [B, H/32, W/32, 32 width]
    x = jnp.reshape(x, [n, h * w, c])
    out = {"encoded": x}
    x = AttentionPool(hp["num_heads"], self.num_classes or None, self.head_zeroinit, dtype,
                      name="attnpool")(x)
    out["pre_logits"] = x
    return x, out
