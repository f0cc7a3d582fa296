"""Transformer blocks shared by the image and text towers.

Parameter names match big_vision's released checkpoints (`encoderblock_{i}`, `MlpBlock_0`,
`MultiHeadDotProductAttention_0`, `encoder_norm`, `MAPHead_0`), so those load with a key mapping.
The defaults are big_vision's (tanh-approximated GELU, LayerNorm epsilon 1e-6); OpenAI/open_clip
CLIP towers set `act`, `ln_eps` and `causal` (see ACTIVATIONS).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


# Flax's `nn.gelu` defaults to the tanh approximation (big_vision's choice); open_clip's
# non-OpenAI models use the exact erf form and OpenAI's CLIP uses QuickGELU.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "gelu": functools.partial(nn.gelu, approximate=False),
    "quick_gelu": quick_gelu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation function called `name` (a key of ACTIVATIONS)."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown act {name!r}; known: {list(ACTIVATIONS)}")
  return ACTIVATIONS[name]


REMAT_POLICIES = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class MlpBlock(nn.Module):
  """Transformer MLP: Dense(mlp_dim) -> activation -> Dense(width)."""

  mlp_dim: int
  dtype_mm: Dtype = jnp.float32
  act: str = "gelu_tanh"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, D] -> [B, N, D]
    init = dict(kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=1e-6))
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype_mm, **init)(x)
    x = activation(self.act)(x)
    return nn.Dense(width, dtype=self.dtype_mm, **init)(x)


def implementation(query: jax.Array, mask: jax.Array | None) -> str | None:
  """jax.nn.dot_product_attention's `implementation` for these inputs: cuDNN's fused kernel on
  a GPU where it applies (float16/bfloat16, head size a multiple of 8 up to 128, no general
  mask: causal or none), else None (XLA)."""
  if (jax.default_backend() == "gpu" and mask is None
      and query.dtype in (jnp.bfloat16, jnp.float16)
      and query.shape[-1] % 8 == 0 and query.shape[-1] <= 128):
    return "cudnn"
  return None


def dot_product_attention(query, key, value, mask=None, dtype=None, *,
                          is_causal: bool = False) -> jax.Array:
  """Flax's `attention_fn` interface on jax.nn.dot_product_attention.

  query [B, Lq, H, Dh], key and value [B, Lk, H, Dh]; mask bool, broadcastable to
  [B, H, Lq, Lk] (True: attend); `is_causal` adds the causal mask (cuDNN skips the masked half).
  """
  if dtype is not None:
    query, key, value = (t.astype(dtype) for t in (query, key, value))
  return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                      implementation=implementation(query, mask))


def attention(num_heads: int, dtype_mm: Dtype, out_features: int | None = None,
              out_kernel_init=None, causal: bool = False) -> nn.MultiHeadDotProductAttention:
  """Multi-head attention named as in big_vision (`MultiHeadDotProductAttention_0`), computed by
  jax.nn.dot_product_attention (`causal`: token i attends to tokens <= i).

  Must be called inside a compact module.
  """
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, kernel_init=nn.initializers.xavier_uniform(),
      out_features=out_features, out_kernel_init=out_kernel_init,
      attention_fn=functools.partial(dot_product_attention, is_causal=causal),
      dtype=dtype_mm, deterministic=True, name="MultiHeadDotProductAttention_0")


def key_mask(mask: jax.Array | None) -> jax.Array | None:
  """A padding mask [B, N] (True: a real token) as an attention mask [B, 1, 1, N] over keys."""
  return None if mask is None else mask[:, None, None, :]


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm Transformer block: x + MHA(LN(x)), then x + MLP(LN(x)).

  `causal=True` lets token i attend to tokens <= i only (CLIP's text tower); `mask` [B, N]
  (True: a real token) keeps every token from attending to padding.
  """

  mlp_dim: int
  num_heads: int
  dtype_mm: Dtype = jnp.float32
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None):  # [B, N, D] -> [B, N, D]
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_0")(x)
    y = attention(self.num_heads, self.dtype_mm, causal=self.causal)(y, y, mask=key_mask(mask))
    x = x + y.astype(x.dtype)
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_1")(x)
    y = MlpBlock(self.mlp_dim, self.dtype_mm, self.act, name="MlpBlock_0")(y)
    x = x + y.astype(x.dtype)
    return x, None  # The (carry, output) pair lets the same block run under nn.scan.


class Encoder(nn.Module):
  """A stack of `depth` blocks followed by a final LayerNorm.

  `scan=True` stacks the blocks' parameters on a leading axis (`encoderblock/...` with shape
  [depth, ...]) and compiles one block instead of `depth`; `remat_policy` rematerialises each
  block in the backward pass (see REMAT_POLICIES). `mask` [B, N] (True: a real token) hides
  padding from every block's attention.
  """

  depth: int
  mlp_dim: int
  num_heads: int
  dtype_mm: Dtype = jnp.float32
  scan: bool = False
  remat_policy: str = "none"
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {self.remat_policy!r}; "
                       f"known: {sorted(REMAT_POLICIES)}")
    block = Encoder1DBlock
    if self.remat_policy != "none":
      block = nn.remat(block, prevent_cse=not self.scan,
                       policy=REMAT_POLICIES[self.remat_policy])
    kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype_mm=self.dtype_mm,
              act=self.act, ln_eps=self.ln_eps, causal=self.causal)
    if self.scan:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=self.depth)
      x, _ = stack(**kw, name="encoderblock")(x, mask)
    else:
      for i in range(self.depth):
        x, _ = block(**kw, name=f"encoderblock_{i}")(x, mask)
    return nn.LayerNorm(epsilon=self.ln_eps, name="encoder_norm")(x)


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over the tokens (the real ones only
  where a padding `mask` [B, N] is given)."""

  mlp_dim: int
  num_heads: int
  dtype_mm: Dtype = jnp.float32
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:  # -> [B, D]
    n, _, d = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), x.dtype)
    probe = jnp.tile(probe, [n, 1, 1])
    x = attention(self.num_heads, self.dtype_mm)(probe, x, mask=key_mask(mask))
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_0")(x)
    y = MlpBlock(self.mlp_dim, self.dtype_mm, self.act, name="MlpBlock_0")(y)
    x = x + y.astype(x.dtype)
    return x[:, 0]


POOL_TYPES = ("map", "gap", "tok", "first", "last", "argmax")


def pool(x: jax.Array, pool_type: str, mlp_dim: int, num_heads: int, dtype_mm: Dtype,
         act: str = "gelu_tanh", ln_eps: float = 1e-6,
         tokens: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
  """Pools tokens [B, N, D] -> [B, D] with 'map', 'gap', 'first'/'tok', 'last' or 'argmax'.

  A padding `mask` [B, N] (True: a real token) keeps 'map' and 'gap' to the real tokens; the
  positional poolings ('first', 'last', 'argmax') take none.

  'argmax' takes the position of the largest id in `tokens` [B, N] (open_clip's text pooling:
  CLIP's end-of-text token has the largest id). Must be called inside a compact module (the
  'map' head creates parameters).
  """
  if mask is not None and pool_type not in ("map", "gap"):
    raise ValueError(f"pool_type {pool_type!r} cannot skip padding: use 'map' or 'gap' with a "
                     "padding mask")
  if pool_type == "map":
    return MAPHead(mlp_dim, num_heads, dtype_mm, act, ln_eps, name="MAPHead_0")(x, mask)
  if pool_type == "gap":
    if mask is None:
      return jnp.mean(x, axis=1)
    w = mask[..., None].astype(x.dtype)
    return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)
  if pool_type in ("tok", "first"):
    return x[:, 0]
  if pool_type == "last":
    return x[:, -1]
  if pool_type == "argmax":
    if tokens is None:
      raise ValueError("pool_type='argmax' pools at the largest token id: only the text tower "
                       "has token ids")
    return x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=-1)]
  raise ValueError(f"unknown pool_type {pool_type!r}; known: {', '.join(POOL_TYPES)}")


def head(x: jax.Array, num_classes: int | None, zeroinit: bool, dtype_mm: Dtype,
         use_bias: bool = True) -> jax.Array:
  """The tower's projection `head` [B, D] -> [B, num_classes] in float32 (identity for None).

  `use_bias=False` is CLIP's projection (a plain matrix). Must be called inside a compact module.
  """
  if not num_classes:
    return x
  init = nn.initializers.zeros if zeroinit else nn.initializers.lecun_normal()
  x = nn.Dense(num_classes, kernel_init=init, use_bias=use_bias, dtype=dtype_mm, name="head")(x)
  return x.astype(jnp.float32)
