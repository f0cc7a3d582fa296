"""Greedy decoding, shared by the evaluators that generate text (vqa; captioning).

The model is a function `logits_fn(tokens [B, T]) -> logits [B, T, V]` in which position j
predicts token j + 1 and sees only positions <= j (a causal decoder, with whatever image input
bound in), so one fixed-size token buffer serves every step: example b's prompt fills its
first `lengths[b]` positions, step i writes the argmax of position `lengths[b] + i - 1` at
`lengths[b] + i`, and what lies beyond is never seen. Each step runs the whole buffer (no
key-value cache): right for the short answers and captions it is used for.
"""

from typing import Callable

import jax
import jax.numpy as jnp


def greedy(logits_fn: Callable[[jax.Array], jax.Array], tokens: jax.Array, lengths: jax.Array,
           steps: int, eos: int) -> jax.Array:
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
    z = logits_fn(tokens)
    nxt = jnp.where(done, 0, jnp.argmax(z[rows, pos - 1], -1).astype(jnp.int32))
    tokens = tokens.at[rows, jnp.minimum(pos, t - 1)].set(
        jnp.where(pos < t, nxt, tokens[rows, t - 1]))
    return tokens, done | (nxt == eos), out.at[:, i].set(nxt)

  _, _, out = jax.lax.fori_loop(0, steps, body, (
      tokens.astype(jnp.int32), jnp.zeros((b,), bool), jnp.zeros((b, steps), jnp.int32)))
  return out
