"""Two-tower model: image tower (ViT or CLIP's ResNet) + text Transformer, L2-normalised
embeddings, t and b.

Parameters: `img/...`, `txt/...`, `t` (log temperature, shape [1]) and `b` (bias, shape [1]),
as in big_vision's released SigLIP checkpoints. CLIP's learnt logit scale is `t` with
`bias_init=None`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.models.resnet import ResNet
from big_vision_lite.models.text import TextTransformer
from big_vision_lite.models.vit import ViT, decode_variant

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
IMAGE_TOWERS = {"vit": ViT, "resnet": ResNet}  # model.image['type'] -> tower


def image_tower_type(image: dict[str, Any]) -> str:
  """`image['type']` ('vit' when absent), checked against IMAGE_TOWERS."""
  kind = image.get("type") or "vit"
  if kind not in IMAGE_TOWERS:
    raise ValueError(f"unknown model.image type {kind!r}; known: {list(IMAGE_TOWERS)}")
  return kind


def naflex_example(image: dict[str, Any], batch: int, seq_len: int) -> dict[str, np.ndarray]:
  """Zero NaFlex input (see vit.ViT) of `seq_len` patches for the image tower config `image`."""
  patch = image.get("patch_size") or decode_variant(image.get("variant")).get("patch_size")
  if not patch:
    raise ValueError("the NaFlex ViT needs a patch size: a variant such as 'B/16' or patch_size")
  idx = np.arange(seq_len, dtype=np.int32)
  return {"patches": np.zeros((batch, seq_len, patch[0] * patch[1] * 3), np.float32),
          "yidx": np.tile(idx // 4, (batch, 1)), "xidx": np.tile(idx % 4, (batch, 1)),
          "mask": np.ones((batch, seq_len), bool)}


def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """x / ||x|| along the last axis, in float32."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class TwoTowers(nn.Module):
  """Image and text towers; either input may be None to embed one modality only.

  `image` holds the image tower's fields plus `type` ('vit', the default, or 'resnet').

  Returns (zimg [B, E] or None, ztxt [B, E] or None, aux) where aux holds `t` = exp(t'),
  `b` (0 when the bias is disabled) and each tower's intermediate outputs.

  With `classes` set the model is an image classifier instead: the image tower and a linear
  head (`classifier`) on its L2-normalised embedding, aux['logits'] [B, classes]; no text tower,
  no t or b.
  """

  image: dict[str, Any]
  text: dict[str, Any]
  out_dim: int | tuple[int, int] | None = None
  temperature_init: float = 10.0
  bias_init: float | None = None
  dtype_mm: str = "float32"
  classes: int | None = None

  def _tower_args(self) -> tuple[type, dict[str, Any], dict[str, Any]]:
    if self.dtype_mm not in DTYPES:
      raise ValueError(f"unknown dtype_mm {self.dtype_mm!r}; known: {sorted(DTYPES)}")
    dims = self.out_dim if isinstance(self.out_dim, (tuple, list)) else (self.out_dim,) * 2
    dtype = DTYPES[self.dtype_mm]
    image = {k: v for k, v in self.image.items() if k != "type"}
    return (IMAGE_TOWERS[image_tower_type(self.image)],
            {"num_classes": dims[0], "dtype_mm": dtype, **image},
            {"num_classes": dims[1], "dtype_mm": dtype, **self.text})

  def _towers(self) -> tuple[ViT | ResNet, TextTransformer]:
    tower, image, text = self._tower_args()
    return tower(**image, name="img"), TextTransformer(**text, name="txt")

  @nn.nowrap
  def image_tower(self) -> ViT | ResNet:
    """The image tower as a module of its own, applied to `params['img']` (a tower's forward
    outside the two-tower model: the views of the self-distillation terms)."""
    tower, image, _ = self._tower_args()
    return tower(**image, parent=None)

  def example_inputs(self, batch: int = 1, seq_len: int = 16) -> tuple[Any, np.ndarray | None]:
    """Zero images [batch, S, S, 3] and tokens [batch, L] at the towers' image_size and max_len
    (what `init` needs; no tokens for a classifier). A NaFlex tower gets `seq_len` zero patches
    (its parameters do not depend on the length) in a 4 x (seq_len / 4) grid."""
    size, max_len = self.image.get("image_size"), self.text.get("max_len")
    naflex = self.image.get("naflex")
    if not (size or naflex) or not (max_len or self.classes):
      raise ValueError("example_inputs needs model.image.image_size and model.text.max_len")
    if naflex:
      images = naflex_example(self.image, batch, seq_len)
    else:
      images = np.zeros((batch, size, size, 3), np.float32)
    return images, None if self.classes else np.zeros((batch, max_len), np.int32)

  @nn.compact
  def __call__(self, image: jax.Array | None, text: jax.Array | None):
    img_tower, txt_tower = self._towers()
    out = {}
    zimg = ztxt = None
    if self.classes:
      zimg, out["img"] = img_tower(image)
      zimg = l2_normalize(zimg)
      out["logits"] = nn.Dense(self.classes, kernel_init=nn.initializers.zeros,
                               name="classifier")(zimg)  # [B, classes] float32
      return zimg, None, out
    if image is not None:
      zimg, out["img"] = img_tower(image)
      zimg = l2_normalize(zimg)
    if text is not None:
      ztxt, out["txt"] = txt_tower(text)
      ztxt = l2_normalize(ztxt)
    t = self.param("t", nn.initializers.constant(np.log(self.temperature_init)), (1,), jnp.float32)
    out["t"] = jnp.exp(t[0])
    if self.bias_init is not None:
      out["b"] = self.param("b", nn.initializers.constant(self.bias_init), (1,), jnp.float32)[0]
    else:
      out["b"] = jnp.zeros((), jnp.float32)
    return zimg, ztxt, out
