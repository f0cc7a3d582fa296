"""A small decoder-only language model and the projection that makes image tokens its input.

`LanguageModel`: token embedding (`Embed_0`, the text ids plus one BOS id), learnt positions
(`pos_embedding` [1, max_len, D]), causal pre-LN Transformer blocks (the towers' own
`layers.Encoder` with `causal=True`: `Encoder_0/encoderblock_{i}`, `Encoder_0/encoder_norm`) and
an output head (`head/kernel` [D, V], `head/bias` [V]) over the text ids. Optional prefix
embeddings (the projected image tokens) go before the text, as LLaVA places them, and the causal
mask covers prefix and text alike.

`Projection`: image-tower tokens [B, N, Di] -> [B, N, D]: one Dense (`linear`) or LLaVA-1.5's
Dense-GELU-Dense (`mlp`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.models import layers

PROJECTIONS = ("linear", "mlp")  # objectives.vlm.projection


class Projection(nn.Module):
  """Image tokens [B, N, Di] -> LM inputs [B, N, width]."""

  width: int
  kind: str = "mlp"
  dtype_mm: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind not in PROJECTIONS:
      raise ValueError(f"unknown projection {self.kind!r}; known: {list(PROJECTIONS)}")
    x = nn.Dense(self.width, dtype=self.dtype_mm, name="Dense_0")(x)
    if self.kind == "mlp":
      x = nn.Dense(self.width, dtype=self.dtype_mm, name="Dense_1")(nn.gelu(x, approximate=False))
    return x.astype(jnp.float32)


class LanguageModel(nn.Module):
  """tokens int32 [B, T] (text ids < vocab_size, or `vocab_size` for BOS) after optional prefix
  embeddings [B, N, width] -> hidden states [B, N + T, width] (after the final LayerNorm), or
  logits float32 [B, N + T, vocab_size] with `logits=True`. Position i sees positions <= i."""

  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  max_len: int
  dtype_mm: Any = jnp.float32
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6

  @property
  def bos(self) -> int:
    return self.vocab_size

  @nn.compact
  def __call__(self, tokens: jax.Array, prefix: jax.Array | None = None,
               logits: bool = False) -> jax.Array:
    x = nn.Embed(self.vocab_size + 1, self.width, name="Embed_0")(tokens)  # [B, T, D]
    if prefix is not None:
      x = jnp.concatenate([prefix.astype(x.dtype), x], 1)
    if x.shape[1] > self.max_len:
      raise ValueError(f"the language model's context is {self.max_len} positions; it got "
                       f"{x.shape[1]} ({x.shape[1] - tokens.shape[1]} prefix + "
                       f"{tokens.shape[1]} text)")
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(self.width)),
                     (1, self.max_len, self.width), jnp.float32)
    x = x + pos[:, :x.shape[1]]
    x = layers.Encoder(self.depth, self.mlp_dim, self.num_heads, self.dtype_mm, act=self.act,
                       ln_eps=self.ln_eps, causal=True, name="Encoder_0")(x)
    head = nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, dtype=self.dtype_mm,
                    name="head")
    if logits or self.is_initializing():
      return head(x).astype(jnp.float32)
    return x
