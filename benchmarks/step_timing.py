"""Shared by the step benchmarks: a random batch on the devices, and timed update steps."""

import time

import jax
import numpy as np

from big_vision_lite import train


def random_batch(cfg, mesh) -> dict[str, jax.Array]:
  """Every key the update step takes, random and placed with the batch sharding once, so that
  the input pipeline is not measured: uniform images in [-1, 1], random token ids, class labels
  in [0, 2), boxes with y0 <= y1 and x0 <= x1 in [0, 1], and flags of 1."""
  abstract = train.abstract_batch(cfg, mesh)
  rng = np.random.default_rng(0)
  host = {}
  for key, x in abstract.items():
    if key == "image":
      host[key] = rng.uniform(-1, 1, x.shape).astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer):
      high = cfg.model.text.vocab_size if len(x.shape) == 2 else 2
      host[key] = rng.integers(1 if len(x.shape) == 2 else 0, high, x.shape).astype(x.dtype)
    elif len(x.shape) == 2 and x.shape[1] == 4:  # Boxes.
      corners = np.sort(rng.uniform(0, 1, (x.shape[0], 2, 2)), axis=1)  # [n, (lo, hi), (y, x)]
      host[key] = corners.reshape(x.shape[0], 4).astype(np.float32)
    else:
      host[key] = np.ones(x.shape, np.float32)
  return {k: jax.device_put(v, abstract[k].sharding) for k, v in host.items()}


def time_steps(update, state, batch, steps: int, warmup: int = 2):
  """(seconds per step over `steps` timed steps after `warmup` untimed ones, final state)."""
  for _ in range(warmup):
    state, m = update(state, batch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = update(state, batch)
  jax.block_until_ready(m)
  return (time.perf_counter() - start) / steps, state
