"""The LocCa decoder: a Transformer decoder that reads the image tower's un-pooled tokens.

Pre-LayerNorm blocks of self-attention (causal, or full for parallel prediction), cross-attention
to the image tokens and an MLP, as big_vision's CapPa decoder (no attention biases). Token id
`vocab_size` is the mask token of parallel prediction (input only). The output head
(`head/kernel` [D, V], `head/bias` [V]) is applied by `logits`, or by `cross_entropy` in chunks of
tokens so that a 256k vocabulary never needs [B, L, V] logits in memory.

Parameters: `Embed_0`, `pos_embedding`, `image_proj`, `DecoderBlock_{i}/{LayerNorm_0,
SelfAttention, LayerNorm_1, CrossAttention, LayerNorm_2, MlpBlock_0}`, `LayerNorm_out`, `head`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.models import layers


def _attention(num_heads: int, dtype_mm, name: str) -> nn.MultiHeadDotProductAttention:
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, kernel_init=nn.initializers.xavier_uniform(), use_bias=False,
      dtype=dtype_mm, deterministic=True, name=name)


class DecoderBlock(nn.Module):
  """x + SelfAttn(LN(x)), then x + CrossAttn(LN(x), image), then x + MLP(LN(x))."""

  mlp_dim: int
  num_heads: int
  dtype_mm: Any = jnp.float32
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, image: jax.Array, mask: jax.Array) -> jax.Array:
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_0")(x)
    x = x + _attention(self.num_heads, self.dtype_mm, "SelfAttention")(y, y, mask=mask).astype(
        x.dtype)
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_1")(x)
    x = x + _attention(self.num_heads, self.dtype_mm, "CrossAttention")(y, image).astype(x.dtype)
    y = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_2")(x)
    return x + layers.MlpBlock(self.mlp_dim, self.dtype_mm, self.act, name="MlpBlock_0")(
        y).astype(x.dtype)


class Decoder(nn.Module):
  """tokens int32 [B, T] (ids < vocab_size, or vocab_size for the mask token), image tokens
  [B, N, Di], attention mask bool [B, 1, T, T] -> hidden states [B, T, D] (after the final
  LayerNorm), or logits [B, T, vocab_size] with `logits=True`."""

  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  max_len: int
  dtype_mm: Any = jnp.float32
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, tokens: jax.Array, image: jax.Array, mask: jax.Array,
               logits: bool = False) -> jax.Array:
    if tokens.shape[1] > self.max_len:
      raise ValueError(f"decoder built for {self.max_len} positions got {tokens.shape[1]}")
    x = nn.Embed(self.vocab_size + 1, self.width, name="Embed_0")(tokens)  # [B, T, D]
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(self.width)),
                     (1, self.max_len, self.width), jnp.float32)
    x = x + pos[:, :tokens.shape[1]]
    image = nn.Dense(self.width, dtype=self.dtype_mm, name="image_proj")(image)  # [B, N, D]
    for i in range(self.depth):
      x = DecoderBlock(self.mlp_dim, self.num_heads, self.dtype_mm, self.act, self.ln_eps,
                       name=f"DecoderBlock_{i}")(x, image, mask)
    x = nn.LayerNorm(epsilon=self.ln_eps, name="LayerNorm_out")(x)
    head = nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, dtype=self.dtype_mm,
                    name="head")
    if logits or self.is_initializing():
      return head(x).astype(jnp.float32)
    return x


def logits(head: dict, h: jax.Array) -> jax.Array:
  """Logits float32 [..., V] of hidden states [..., D] with the head's {kernel, bias}."""
  return (jnp.dot(h, head["kernel"].astype(h.dtype), preferred_element_type=jnp.float32)
          + head["bias"].astype(jnp.float32))


def _nll(head: dict, h: jax.Array, targets: jax.Array) -> jax.Array:
  z = logits(head, h)
  return jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, targets[..., None], -1)[..., 0]


def cross_entropy(head: dict, h: jax.Array, targets: jax.Array,
                  chunk: int | None = None) -> jax.Array:
  """Per-token negative log-likelihood float32 [...] of `targets` [...] under the head's logits
  of hidden states `h` [..., D]. With `chunk`, the tokens are taken `chunk` at a time and each
  chunk's logits are recomputed in the backward pass (jax.checkpoint), so memory holds
  [chunk, V] logits instead of [tokens, V]."""
  shape = targets.shape
  h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
  n = targets.shape[0]
  if chunk is None or n <= chunk:
    return _nll(head, h, targets).reshape(shape)
  pad = -n % chunk
  h = jnp.pad(h, ((0, pad), (0, 0))).reshape(-1, chunk, h.shape[-1])
  t = jnp.pad(targets, (0, pad)).reshape(-1, chunk)
  body = jax.checkpoint(lambda hc, tc: _nll(head, hc, tc))
  nll = jax.lax.map(lambda xs: body(*xs), (h, t))
  return nll.reshape(-1)[:n].reshape(shape)
