"""ViT image tower: variant table, patch embedding, position embedding, pooling.

The defaults are big_vision's ViT. OpenAI/open_clip CLIP ViTs are the options
`pool_type='tok', posemb_cls=True, ln_pre=True, patch_bias=False, head_bias=False,
act='quick_gelu' (OpenAI) or 'gelu', ln_eps=1e-5`.

`naflex=True` is SigLIP 2's NaFlex tower (big_vision's `naflex_vit.py`): it takes patches of
images at their own aspect ratio and size, padded to a common length N, as the dict

  {'patches': float [B, N, P*P*3], 'yidx': int32 [B, N], 'xidx': int32 [B, N], 'mask': bool [B, N]}

(each patch flattened in (row, column, channel) order; yidx/xidx its row and column in the
image's patch grid; mask False on padding). The patch embedding is a Dense `embedding` over the
flattened patch, and the learned position embedding `pos_embedding` [G, G, D] (G =
`posemb_grid`) is resized per image to its patch grid (max yidx + 1 rows, max xidx + 1 columns of
its real patches) with antialiased bilinear interpolation, then read at each patch's
(yidx, xidx). Every attention layer and the pooling ('map' or 'gap') skip the padding.
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


POSEMBS = ("learn", "sincos2d")  # ViT.posemb
POOL_TYPES = ("map", "gap", "tok")  # ViT.pool_type: attention probe, mean, class token
NAFLEX_POOL_TYPES = ("map", "gap")  # the poolings that can skip padding
NAFLEX_KEYS = ("patches", "yidx", "xidx", "mask")  # the NaFlex input dict


def posemb_resize_weights(size: jax.Array, grid: int, length: int) -> jax.Array:
  """[length, grid]: row i holds the weights of the `grid` position-embedding entries at output
  index i when `grid` entries are resized to `size` (a traced scalar) with antialiased bilinear
  interpolation, as jax.image.scale_and_translate does it (row i >= size is unused).

  Resizing is linear and separable, so the resized grid is Wy @ pos @ Wx^T: reading it at a
  patch's (y, x) needs rows y of Wy and x of Wx only, never the [rows, columns, D] image.
  """
  return jax.image.scale_and_translate(
      jnp.eye(grid, dtype=jnp.float32), (length, grid), (0,),
      scale=jnp.reshape(size / grid, (1,)).astype(jnp.float32),
      translation=jnp.zeros((1,), jnp.float32), method="bilinear", antialias=True)


def naflex_posemb(pos: jax.Array, yidx: jax.Array, xidx: jax.Array,
                  mask: jax.Array) -> jax.Array:
  """The G x G grid `pos` [G, G, D] resized to each image's patch grid and read at its patches:
  [B, N, D]. An image's grid is (max yidx + 1, max xidx + 1) over its real patches (`mask`)."""
  grid, length = pos.shape[0], yidx.shape[1]
  rows = jnp.max(jnp.where(mask, yidx, 0), axis=1) + 1  # [B]
  cols = jnp.max(jnp.where(mask, xidx, 0), axis=1) + 1
  weights = jax.vmap(posemb_resize_weights, in_axes=(0, None, None))
  # "clip" keeps padding (whatever its indices) finite: a NaN there would reach the real tokens
  # through the attention's zero weights (0 * NaN).
  wy = jnp.take_along_axis(weights(rows, grid, length), yidx[..., None], axis=1,
                           mode="clip")  # [B, N, G]
  wx = jnp.take_along_axis(weights(cols, grid, length), xidx[..., None], axis=1, mode="clip")
  return jnp.einsum("bna,bnc,acd->bnd", wy, wx, pos.astype(jnp.float32))


def patchify_grid(images: jax.Array, patch: int) -> dict[str, jax.Array]:
  """Images [B, H, W, C] (H, W multiples of `patch`) -> the NaFlex input of their whole patch
  grid, no padding (as data/ops.patchify, on device)."""
  b, h, w, c = images.shape
  rows, cols = h // patch, w // patch
  if rows * patch != h or cols * patch != w:
    raise ValueError(f"{h}x{w} images are not a whole number of {patch}-pixel patches; resize "
                     "them to multiples of the patch size")
  patches = jnp.reshape(images, (b, rows, patch, cols, patch, c)).transpose(0, 1, 3, 2, 4, 5)
  y, x = jnp.divmod(jnp.arange(rows * cols, dtype=jnp.int32), cols)
  return {"patches": jnp.reshape(patches, (b, rows * cols, patch * patch * c)),
          "yidx": jnp.broadcast_to(y, (b, rows * cols)),
          "xidx": jnp.broadcast_to(x, (b, rows * cols)),
          "mask": jnp.ones((b, rows * cols), bool)}


def check_naflex_input(image: Any) -> None:
  """Raises ValueError unless `image` is the NaFlex input dict (keys NAFLEX_KEYS, [B, N] index
  arrays matching `patches` [B, N, P*P*3])."""
  if not isinstance(image, dict) or set(image) != set(NAFLEX_KEYS):
    got = sorted(image) if isinstance(image, dict) else f"an array of shape {np.shape(image)}"
    raise ValueError(f"the NaFlex ViT (naflex=True) takes a dict with keys {list(NAFLEX_KEYS)}, "
                     f"got {got}; patchify the images (the `naflex` preprocessing op)")
  b, n = image["patches"].shape[:2]
  for k in NAFLEX_KEYS[1:]:
    if image[k].shape != (b, n):
      raise ValueError(f"NaFlex input {k!r} has shape {image[k].shape}; patches "
                       f"{image['patches'].shape} need [{b}, {n}]")


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
  raise ValueError(f"unknown posemb {kind!r}; known: {', '.join(POSEMBS)}")


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
  naflex: bool = False
  posemb_grid: int = 16  # NaFlex: side of the learned position-embedding grid

  def hparams(self) -> dict[str, Any]:
    """The variant's hyper-parameters, with any explicitly given field taking precedence."""
    hp = resolve_hparams(self, ("width", "depth", "mlp_dim", "num_heads", "patch_size"), "'B/16'")
    hp["patch_size"] = tuple(hp["patch_size"])
    return hp

  def _embed_naflex(self, image: dict[str, jax.Array], width: int, patch: tuple[int, int]):
    """NaFlex patches and positions -> tokens [B, N, D] and the padding mask [B, N]."""
    check_naflex_input(image)
    if self.posemb != "learn" or self.posemb_cls or self.pool_type not in NAFLEX_POOL_TYPES:
      raise ValueError(f"naflex=True needs posemb='learn', posemb_cls=False and pool_type in "
                       f"{NAFLEX_POOL_TYPES}; got {self.posemb!r}, {self.posemb_cls}, "
                       f"{self.pool_type!r}")
    if image["patches"].shape[-1] != patch[0] * patch[1] * 3:
      raise ValueError(f"NaFlex patches have {image['patches'].shape[-1]} values; patch size "
                       f"{patch} needs {patch[0] * patch[1] * 3} (P*P*3): patchify with the "
                       "model's patch size")
    x = nn.Dense(width, use_bias=self.patch_bias, dtype=self.dtype_mm,
                 name="embedding")(image["patches"].astype(jnp.float32))
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(width)),
                     (self.posemb_grid, self.posemb_grid, width), jnp.float32)
    mask = image["mask"].astype(bool)
    x = x.astype(jnp.float32) + naflex_posemb(pos, image["yidx"], image["xidx"], mask)
    return x, mask

  @nn.compact
  def __call__(self, image: jax.Array | dict[str, jax.Array],
               patch_mask: jax.Array | None = None, mask_token: jax.Array | None = None,
               any_size: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`patch_mask` bool [B, N]: those embedded patches are replaced by `mask_token` [D] (before
    the position embedding is added; masked prediction). `any_size`: images of another size
    than `image_size` are taken, the learned position embedding resized to their patch grid
    (antialiased bilinear; the views of self-distillation). A NaFlex ViT takes the NaFlex input
    dict and neither option."""
    hp = self.hparams()
    if self.naflex:
      if patch_mask is not None or any_size:
        raise ValueError("the NaFlex ViT takes no patch_mask or any_size (self-distillation "
                         "and masked prediction need a square-image ViT)")
      x, mask = self._embed_naflex(image, hp["width"], hp["patch_size"])
      return self._encode(x, hp, mask)
    if isinstance(image, dict):
      raise ValueError(f"this ViT takes images [B, H, W, 3], got a dict with keys {sorted(image)}"
                       "; set model.image.naflex=True for NaFlex patches")
    if (self.image_size is not None and image.shape[1:3] != (self.image_size,) * 2
        and not any_size):
      raise ValueError(f"ViT built for {self.image_size}x{self.image_size} images got "
                       f"{image.shape[1]}x{image.shape[2]}; resize the input or set image_size")
    if self.posemb_cls and (self.pool_type != "tok" or self.posemb != "learn"):
      raise ValueError("posemb_cls=True (a learnt position for the class token) needs "
                       f"pool_type='tok' and posemb='learn', got {self.pool_type!r}, "
                       f"{self.posemb!r}")
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
    return self._encode(x, hp)

  def _encode(self, x: jax.Array, hp: dict[str, Any], mask: jax.Array | None = None):
    """Tokens [B, N, D] (padding where `mask` is False) -> (embedding, aux)."""
    out = {}
    if self.ln_pre:
      x = nn.LayerNorm(epsilon=self.ln_eps, name="ln_pre")(x)
    x = layers.Encoder(hp["depth"], hp["mlp_dim"], hp["num_heads"], self.dtype_mm,
                       scan=self.scan, remat_policy=self.remat_policy, act=self.act,
                       ln_eps=self.ln_eps, name="Transformer")(x, mask)
    out["encoded"] = x
    x = layers.pool(x, self.pool_type, hp["mlp_dim"], hp["num_heads"], self.dtype_mm, self.act,
                    self.ln_eps, mask=mask)
    out["pre_logits"] = x  # [B, D]
    return layers.head(x, self.num_classes, self.head_zeroinit, self.dtype_mm,
                       self.head_bias), out
