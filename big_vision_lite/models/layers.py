"""Transformer blocks shared by the image and text towers.

Parameter names match big_vision's released checkpoints (`encoderblock_{i}`, `MlpBlock_0`,
`MultiHeadDotProductAttention_0`, `encoder_norm`, `MAPHead_0`), so those load with a key mapping.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

REMAT_POLICIES = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class MlpBlock(nn.Module):
  """Transformer MLP: Dense(mlp_dim) -> GELU -> Dense(width)."""

  mlp_dim: int
  dtype_mm: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, D] -> [B, N, D]
    init = dict(kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=1e-6))
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype_mm, **init)(x)
    x = nn.gelu(x)
    return nn.Dense(width, dtype=self.dtype_mm, **init)(x)


def _attention(num_heads: int, dtype_mm: Dtype) -> nn.MultiHeadDotProductAttention:
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, kernel_init=nn.initializers.xavier_uniform(),
      dtype=dtype_mm, deterministic=True, name="MultiHeadDotProductAttention_0")


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm Transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

  mlp_dim: int
  num_heads: int
  dtype_mm: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, _=None):  # [B, N, D] -> [B, N, D]
    y = nn.LayerNorm(name="LayerNorm_0")(x)
    y = _attention(self.num_heads, self.dtype_mm)(y, y)
    x = x + y.astype(x.dtype)
    y = nn.LayerNorm(name="LayerNorm_1")(x)
    y = MlpBlock(self.mlp_dim, self.dtype_mm, name="MlpBlock_0")(y)
    x = x + y.astype(x.dtype)
    return x, None  # The (carry, output) pair lets the same block run under nn.scan.


class Encoder(nn.Module):
  """A stack of `depth` blocks followed by a final LayerNorm.

  `scan=True` stacks the blocks' parameters on a leading axis (`encoderblock/...` with shape
  [depth, ...]) and compiles one block instead of `depth`; `remat_policy` rematerialises each
  block in the backward pass (see REMAT_POLICIES).
  """

  depth: int
  mlp_dim: int
  num_heads: int
  dtype_mm: Dtype = jnp.float32
  scan: bool = False
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, D] -> [B, N, D]
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {self.remat_policy!r}; "
                       f"known: {sorted(REMAT_POLICIES)}")
    block = Encoder1DBlock
    if self.remat_policy != "none":
      block = nn.remat(block, prevent_cse=not self.scan,
                       policy=REMAT_POLICIES[self.remat_policy])
    if self.scan:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      length=self.depth)
      x, _ = stack(self.mlp_dim, self.num_heads, self.dtype_mm, name="encoderblock")(x, None)
    else:
      for i in range(self.depth):
        x, _ = block(self.mlp_dim, self.num_heads, self.dtype_mm, name=f"encoderblock_{i}")(x)
    return nn.LayerNorm(name="encoder_norm")(x)


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over the tokens."""

  mlp_dim: int
  num_heads: int
  dtype_mm: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, D] -> [B, D]
    n, _, d = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), x.dtype)
    probe = jnp.tile(probe, [n, 1, 1])
    x = _attention(self.num_heads, self.dtype_mm)(probe, x)
    y = nn.LayerNorm(name="LayerNorm_0")(x)
    x = x + MlpBlock(self.mlp_dim, self.dtype_mm, name="MlpBlock_0")(y).astype(x.dtype)
    return x[:, 0]


def pool(x: jax.Array, pool_type: str, mlp_dim: int, num_heads: int, dtype_mm: Dtype) -> jax.Array:
  """Pools tokens [B, N, D] -> [B, D] with 'map', 'gap', 'first'/'tok' or 'last'.

  Must be called inside a compact module (the 'map' head creates parameters).
  """
  if pool_type == "map":
    return MAPHead(mlp_dim, num_heads, dtype_mm, name="MAPHead_0")(x)
  if pool_type == "gap":
    return jnp.mean(x, axis=1)
  if pool_type in ("tok", "first"):
    return x[:, 0]
  if pool_type == "last":
    return x[:, -1]
  raise ValueError(f"unknown pool_type {pool_type!r}; known: map, gap, tok, first, last")


def head(x: jax.Array, num_classes: int | None, zeroinit: bool, dtype_mm: Dtype) -> jax.Array:
  """The tower's projection `head` [B, D] -> [B, num_classes] in float32 (identity for None).

  Must be called inside a compact module.
  """
  if not num_classes:
    return x
  init = nn.initializers.zeros if zeroinit else nn.initializers.lecun_normal()
  x = nn.Dense(num_classes, kernel_init=init, dtype=dtype_mm, name="head")(x)
  return x.astype(jnp.float32)
