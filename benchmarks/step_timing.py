"""Shared by the step benchmarks: a random batch on the devices, and timed update steps."""

import time

import jax
import numpy as np

from big_vision_lite import train


def random_batch(cfg, mesh) -> dict[str, jax.Array]:
  """Uniform images in [-1, 1], random token ids for every integer key the objectives read
  (labels, vlm_text, ...) and ones for their float keys (weights, flags), placed with the batch
  sharding once, so that the input pipeline is not measured."""
  abstract = train.abstract_batch(cfg, mesh)
  rng = np.random.default_rng(0)
  host = {"image": rng.uniform(-1, 1, abstract["image"].shape).astype(np.float32)}
  for key, spec in abstract.items():
    if key != "image":
      host[key] = (rng.integers(1, cfg.model.text.vocab_size, spec.shape).astype(spec.dtype)
                   if np.issubdtype(spec.dtype, np.integer) else np.ones(spec.shape, spec.dtype))
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
