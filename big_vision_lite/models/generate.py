"""Greedy decoding, shared by everything that generates text (the VLM's answers; LocCa's
captions and referring boxes).

The model is a function `next_logits(tokens [B, T], at [B]) -> logits [B, V]`: the logits with
which position `at[b]` of row b predicts the token after it, in a causal decoder (position j
sees only positions <= j; whatever image input is bound in). So one fixed-size token buffer
serves every step: example b's prompt fills its first `lengths[b]` positions, step i writes the
argmax at `lengths[b] + i - 1` to `lengths[b] + i`, and what lies beyond is never seen. Each
step runs the whole buffer (no key-value cache; right for short answers and captions) but takes
the head's logits at one position per row, so a large vocabulary never needs [B, T, V].
"""

from typing import Callable

import jax
import jax.numpy as jnp


def at(h: jax.Array, positions: jax.Array) -> jax.Array:
  """Row b's entry at `positions[b]`: [B, T, ...] -> [B, ...]."""
  return h[jnp.arange(h.shape[0]), positions]


def greedy(next_logits: Callable[[jax.Array, jax.Array], jax.Array], tokens: jax.Array,
           lengths: jax.Array, steps: int, eos: int) -> jax.Array:
  """Greedily generated ids int32 [B, steps] after each example's prompt (`tokens` int32 [B, T]
  with the prompt in positions [0, lengths[b]), lengths >= 1, lengths + steps <= T); after an
  example's `eos` the rest of its row is 0 (padding)."""
  b, t = tokens.shape
  if steps < 1:
    raise ValueError(f"greedy decoding needs steps >= 1, got {steps}")
  rows = jnp.arange(b)
  lengths = jnp.asarray(lengths, jnp.int32)

  def body(i, carry):
    tokens, done, out = carry
    pos = lengths + i  # Where this step's token goes; position pos - 1 predicts it.
    nxt = jnp.where(done, 0, jnp.argmax(next_logits(tokens, pos - 1), -1).astype(jnp.int32))
    tokens = tokens.at[rows, jnp.minimum(pos, t - 1)].set(
        jnp.where(pos < t, nxt, tokens[rows, t - 1]))
    return tokens, done | (nxt == eos), out.at[:, i].set(nxt)

  _, _, out = jax.lax.fori_loop(0, steps, body, (
      tokens.astype(jnp.int32), jnp.zeros((b,), bool), jnp.zeros((b, steps), jnp.int32)))
  return out
