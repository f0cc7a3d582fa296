"""Shared by the step benchmarks: a random batch on the devices, timed update steps, the plain
step they are compared with, and the copies in a compiled step."""

import re
import time

import jax
import numpy as np
import optax

from big_vision_lite import job, losses, objectives, pytree, train
from big_vision_lite import sharding as sharding_lib


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
  if warmup:
    jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = update(state, batch)
  jax.block_until_ready(m)
  return (time.perf_counter() - start) / steps, state


def time_interleaved(steps: dict, batch, rounds: int, steps_per_round: int,
                     warmup: int = 2) -> dict[str, list[float]]:
  """{name: [seconds per step in each round]} for `steps` {name: (update, state)}: every round
  times each step in turn, so that load from other work on the machine falls on all alike."""
  states = {name: state for name, (_, state) in steps.items()}
  times = {name: [] for name in steps}
  for r in range(rounds):
    for name, (update, _) in steps.items():
      seconds, states[name] = time_steps(update, states[name], batch, steps_per_round,
                                         warmup if r == 0 else 0)
      times[name].append(seconds)
  return times


def plain_update(cfg, mesh, total_steps: int, warmup_steps: int = 0):
  """(update, abstract_state, init_fn): the step with nothing but the loss, its gradient and
  the same optimiser (clipping included), as a minimal harness writes it: no non-finite guard,
  no gradient-norm metric, no metrics. The trainer's step (train.build) is timed against it."""
  model = job.build_model(cfg)
  tx, _, abstract_state, shardings, init_fn, mask, _ = train.create_train_state(
      cfg, model, mesh, total_steps, warmup_steps, objectives.make_terms(cfg, mesh))
  apply = job.apply_fn(cfg, model)
  contrastive = losses.make_loss(cfg.loss, mesh)

  def update(state, batch):
    trainable, frozen = pytree.partition(state["params"], mask)

    def loss_fn(params):
      zimg, ztxt, out = apply(pytree.merge(params, frozen), batch["image"], batch["labels"])
      return contrastive(zimg, ztxt, out["t"], out["b"])[0]

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt = tx.update(grads, state["opt"], trainable)
    params = pytree.merge(optax.apply_updates(trainable, updates), frozen)
    return {**state, "params": params, "opt": opt, "step": state["step"] + 1}, loss

  update = jax.jit(update, donate_argnums=0,
                   in_shardings=(shardings, sharding_lib.batch_sharding(mesh)),
                   out_shardings=(shardings, sharding_lib.replicated(mesh)))
  return update, abstract_state, init_fn


def entry_copies(compiled) -> tuple[int, int]:
  """(copy instructions, elements they copy) in the top-level computation of a compiled step:
  layout copies inside fusions are not counted, whole-buffer copies of state are."""
  text = compiled.as_text()
  entry = text[text.index("\nENTRY "):]
  entry = entry[:entry.index("\n}")]
  shapes = re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} copy\(", entry)
  return len(shapes), sum(int(np.prod([int(d) for d in s.split(",") if d])) for s in shapes)
