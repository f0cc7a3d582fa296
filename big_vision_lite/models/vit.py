"""ViT image tower: variant table, patch embedding, position embedding, pooling.

The defaults are big_vision's ViT. OpenAI/open_clip CLIP ViTs are the options
`pool_type='tok', posemb_cls=True, ln_pre=True, patch_bias=False, head_bias=False,
act='quick_gelu' (OpenAI) or 'gelu', ln_eps=1e-5`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.models import layers

# name -> (width, depth, mlp_dim, num_heads), as in the ViT, "Scaling ViTs" and SigLIP papers.
VARIANTS = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}


def decode_variant(variant: str | None) -> dict[str, Any]:
  """'B/16' -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16))."""
  if variant is None:
    return {}
  name, _, patch = variant.partition("/")
  if name not in VARIANTS:
    raise ValueError(f"unknown model variant {name!r} in {variant!r}; known: {list(VARIANTS)}")
  width, depth, mlp_dim, num_heads = VARIANTS[name]
  out = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
  if patch:
    if not patch.isdigit():
      raise ValueError(f"bad patch size {patch!r} in variant {variant!r}; expected e.g. 'B/16'")
    out["patch_size"] = (int(patch), int(patch))
  return out


def resolve_hparams(tower: Any, keys: tuple[str, ...], example: str) -> dict[str, Any]:
  """`tower.variant`'s hyper-parameters for `keys`, overridden by fields the tower sets."""
  hp = {k: v for k, v in decode_variant(tower.variant).items() if k in keys}
  hp.update({k: getattr(tower, k) for k in keys if getattr(tower, k) is not None})
  missing = set(keys) - set(hp)
  if missing:
    raise ValueError(f"{type(tower).__name__} needs {sorted(missing)}: give a variant such as "
                     f"{example} or set them")
  return hp


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.) -> np.ndarray:
  """Fixed 2-D sine-cosine position embedding [1, h*w, width] (MoCo v3 / big_vision layout)."""
  if width % 4:
    raise ValueError(f"sincos2d position embedding needs width divisible by 4, got {width}")
  y, x = np.mgrid[:h, :w]
  omega = 1. / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
  y = np.einsum("m,d->md", y.flatten(), omega)
  x = np.einsum("m,d->md", x.flatten(), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe[None].astype(np.float32)


def _resized(pos: jax.Array, grid: tuple[int, int], size: tuple[int, int]) -> jax.Array:
  """A position embedding [1, gh * gw, D] of patch grid `grid` resized to grid `size`
  (antialiased bilinear, as NaFlex resizes its grid); unchanged when the grids are equal."""
  if tuple(grid) == tuple(size) or pos.shape[1] != grid[0] * grid[1]:
    return pos
  d = pos.shape[-1]
  out = jax.image.resize(pos.reshape(1, *grid, d), (1, *size, d), "bilinear", antialias=True)
  return out.reshape(1, size[0] * size[1], d)


def _pos_embedding(module: nn.Module, kind: str, seqshape: tuple[int, int], width: int):
  if kind == "learn":
    return module.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(width)),
                        (1, np.prod(seqshape), width), jnp.float32)
  if kind == "sincos2d":
    return jnp.asarray(posemb_sincos_2d(*seqshape, width))
  raise ValueError(f"unknown posemb {kind!r}; known: learn, sincos2d")


class ViT(nn.Module):
  """Vision Transformer: images [B, H, W, 3] -> (embedding [B, num_classes or D], aux dict).

  Options beyond big_vision's: `posemb_cls` (the position embedding also covers the class token,
  [1, 1 + N, D], as OpenAI's CLIP), `ln_pre` (a LayerNorm before the encoder), `patch_bias`,
  `head_bias`, `act` (see layers.ACTIVATIONS) and `ln_eps`.
  """

  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  patch_size: tuple[int, int] | None = None
  image_size: int | None = None  # input resolution; None: whatever the input has
  num_classes: int | None = None
  posemb: str = "learn"
  pool_type: str = "map"
  head_zeroinit: bool = False
  dtype_mm: Any = jnp.float32
  scan: bool = False
  remat_policy: str = "none"
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  ln_pre: bool = False
  patch_bias: bool = True
  posemb_cls: bool = False
  head_bias: bool = True

  def hparams(self) -> dict[str, Any]:
    """The variant's hyper-parameters, with any explicitly given field taking precedence."""
    hp = resolve_hparams(self, ("width", "depth", "mlp_dim", "num_heads", "patch_size"), "'B/16'")
    hp["patch_size"] = tuple(hp["patch_size"])
    return hp

  @nn.compact
  def __call__(self, image: jax.Array, patch_mask: jax.Array | None = None,
               mask_token: jax.Array | None = None, any_size: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`patch_mask` bool [B, N]: those embedded patches are replaced by `mask_token` [D] (before
    the position embedding is added; masked prediction). `any_size`: images of another size
    than `image_size` are taken, the learned position embedding resized to their patch grid
    (antialiased bilinear; the views of self-distillation)."""
    hp = self.hparams()
    if (self.image_size is not None and image.shape[1:3] != (self.image_size,) * 2
        and not any_size):
      raise ValueError(f"ViT built for {self.image_size}x{self.image_size} images got "
                       f"{image.shape[1]}x{image.shape[2]}; resize the input or set image_size")
    if self.posemb_cls and (self.pool_type != "tok" or self.posemb != "learn"):
      raise ValueError("posemb_cls=True (a learnt position for the class token) needs "
                       f"pool_type='tok' and posemb='learn', got {self.pool_type!r}, "
                       f"{self.posemb!r}")
    out = {}
    x = nn.Conv(hp["width"], hp["patch_size"], strides=hp["patch_size"], padding="VALID",
                use_bias=self.patch_bias, dtype=self.dtype_mm,
                name="embedding")(image.astype(jnp.float32))
    n, h, w, c = x.shape
    x = jnp.reshape(x, [n, h * w, c]).astype(jnp.float32)  # [B, N, D]
    if patch_mask is not None:
      x = jnp.where(patch_mask[..., None], jnp.asarray(mask_token, x.dtype), x)
    # big_vision adds positions to the patches only, then prepends the class token; OpenAI's
    # CLIP prepends the class token first and learns a position for it too.
    grid = (h, w)
    if self.image_size is not None:  # The learned grid is that of image_size.
      grid = (self.image_size // hp["patch_size"][0], self.image_size // hp["patch_size"][1])
    if grid != (h, w) and self.posemb_cls:
      raise ValueError("posemb_cls=True cannot take images of another size than image_size")
    if not self.posemb_cls:
      x = x + _resized(_pos_embedding(self, self.posemb, grid if self.posemb == "learn"
                                      else (h, w), c), grid, (h, w))
    if self.pool_type == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
      x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)
    if self.posemb_cls:
      x = x + self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(c)),
                         (1, 1 + h * w, c), jnp.float32)
    if self.ln_pre:
      x = nn.LayerNorm(epsilon=self.ln_eps, name="ln_pre")(x)
    x = layers.Encoder(hp["depth"], hp["mlp_dim"], hp["num_heads"], self.dtype_mm,
                       scan=self.scan, remat_policy=self.remat_policy, act=self.act,
                       ln_eps=self.ln_eps, name="Transformer")(x)
    out["encoded"] = x
    x = layers.pool(x, self.pool_type, hp["mlp_dim"], hp["num_heads"], self.dtype_mm, self.act,
                    self.ln_eps)
    out["pre_logits"] = x  # [B, D]
    return layers.head(x, self.num_classes, self.head_zeroinit, self.dtype_mm,
                       self.head_bias), out
