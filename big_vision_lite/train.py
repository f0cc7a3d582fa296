"""Trains a two-tower contrastive model (SigLIP sigmoid or CLIP softmax loss).

  python -m big_vision_lite.train --config configs/siglip_shapes.py --workdir DIR [--config.KEY=VALUE ...]

Re-running the same command on the same DIR resumes from the newest checkpoint.
Multi-process: add --coordinator_address HOST:PORT --num_processes N --process_id I to each
process, launch under SLURM (detected from the environment), or pass --distributed on a TPU VM
pod slice (JAX detects the cluster). See launch/.
"""

import argparse
import functools
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import distributed, losses, metrics, optim
from big_vision_lite import sharding as sharding_lib
from big_vision_lite import evaluators
from big_vision_lite.data import loader
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators.common import Embedder
from big_vision_lite.models.two_towers import TwoTowers


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
  """Flags and the config with its `--config.KEY=VALUE` overrides applied."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  p.add_argument("--workdir", required=True, help="checkpoints, metrics and config go here")
  distributed.add_flags(p)
  args, rest = p.parse_known_args(argv)
  config = config_lib.load(args.config)
  config_lib.parse_overrides(config, rest)
  return args, config


def build_model(config: ml_collections.ConfigDict) -> TwoTowers:
  return TwoTowers(**config.model.to_dict())


def create_train_state(config, model: TwoTowers, mesh, total_steps: int, batch_example):
  """Returns (tx, schedule, abstract_state, state_shardings, init_fn).

  The state is {'params', 'opt', 'step'}; `init_fn(rng)` creates it directly with its shardings.
  """
  def init_params(rng):
    return model.init(rng, batch_example["image"], batch_example["labels"])["params"]

  abstract_params = jax.eval_shape(init_params, jax.random.key(0))
  tx, schedule = optim.make(config, abstract_params, total_steps)

  def init_state(rng):
    params = init_params(rng)
    return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  shardings = sharding_lib.state_shardings(mesh, abstract_state, abstract_params,
                                           config.get("sharding_rules") or ())
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                abstract_state, shardings)
  init_fn = jax.jit(init_state, out_shardings=shardings)
  return tx, schedule, abstract_state, shardings, init_fn


def make_update_fn(model: TwoTowers, tx, schedule, loss_name: str, state_shardings, mesh,
                   accum_steps: int = 1):
  """The jitted update step (state donated): (state, batch) -> (state, metrics).

  With `accum_steps` > 1 the gradient is still that of the contrastive loss over the whole
  global batch, not an average of per-micro-batch losses: all micro-batches are embedded
  first (activations discarded), the loss and its gradient w.r.t. the embeddings are taken
  over the full batch, then each micro-batch is re-embedded and back-propagated with its slice
  of those gradients. Activation memory is one micro-batch's; the cost is one extra forward.
  """
  contrastive = losses.make(loss_name, mesh)
  batch_spec = sharding_lib.batch_sharding(mesh)

  def embed(params, batch):
    zimg, ztxt, out = model.apply({"params": params}, batch["image"], batch["labels"])
    return zimg, ztxt, out["t"], out["b"]

  def grads_full_batch(params, batch):
    def loss_fn(params):
      zimg, ztxt, t, b = embed(params, batch)
      loss, measured = contrastive(zimg, ztxt, t, b)
      return loss, {**measured, "t": t, "b": b}
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  def grads_accumulated(params, batch):
    # Micro-batch m takes rows m, m + accum, ...: every device keeps holding its own rows.
    micro = jax.tree.map(lambda x: jnp.swapaxes(
        x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1), batch)
    zimg, ztxt, t, b = jax.lax.map(lambda mb: embed(params, mb), micro)  # [accum, B/accum, E]
    flat = lambda z: jax.lax.with_sharding_constraint(z.reshape(-1, z.shape[-1]), batch_spec)
    (loss, measured), (dzimg, dztxt, dt, db) = jax.value_and_grad(
        contrastive, argnums=(0, 1, 2, 3), has_aux=True)(flat(zimg), flat(ztxt), t[0], b[0])
    dzimg, dztxt = (d.reshape(zimg.shape) for d in (dzimg, dztxt))

    def backprop(grads, xs):
      mb, dzi, dzt = xs
      _, vjp = jax.vjp(lambda p: embed(p, mb), params)
      (g,) = vjp((dzi, dzt, dt / accum_steps, db / accum_steps))
      return jax.tree.map(jnp.add, grads, g), None

    grads, _ = jax.lax.scan(backprop, jax.tree.map(jnp.zeros_like, params),
                            (micro, dzimg, dztxt))
    return (loss, {**measured, "t": t[0], "b": b[0]}), grads

  compute_grads = grads_full_batch if accum_steps == 1 else grads_accumulated

  def update(state, batch):
    (loss, measured), grads = compute_grads(state["params"], batch)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    measured.update(loss=loss, lr=schedule(state["step"]), grad_norm=optax.global_norm(grads))
    return {"params": params, "opt": opt, "step": state["step"] + 1}, measured

  return jax.jit(update, donate_argnums=0, in_shardings=(state_shardings, batch_spec),
                 out_shardings=(state_shardings, sharding_lib.replicated(mesh)))


def build(config, mesh, batch_example, total_steps: int):
  """(model, abstract_state, init_fn, update): everything a config trains with on a mesh."""
  model = build_model(config)
  tx, schedule, abstract_state, shardings, init_fn = create_train_state(
      config, model, mesh, total_steps, batch_example)
  update = make_update_fn(model, tx, schedule, config.loss, shardings, mesh,
                          config.get("grad_accum_steps") or 1)
  return model, abstract_state, init_fn, update


def model_flops_per_step(config, mesh, abstract_batch) -> float:
  """Model FLOPs of one update step: XLA's cost analysis of the plain step (no remat, no
  scan, no accumulation, dense loss: recomputation is not counted and no loop, such as the
  chunked loss's ring, is undercounted)."""
  plain = config.copy_and_resolve_references()
  for tower in ("image", "text"):
    for key, value in (("scan", False), ("remat_policy", "none")):
      if key in plain.model[tower]:  # Not every tower has them (the ResNet has neither).
        plain.model[tower][key] = value
  plain.loss = "sigmoid" if "sigmoid" in plain.loss else "softmax"
  plain.grad_accum_steps = 1
  example = {k: jnp.zeros((1, *v.shape[1:]), v.dtype) for k, v in abstract_batch.items()}
  total_steps = config_lib.resolve_steps(plain, "total", plain.batch_size)
  _, abstract_state, _, update = build(plain, mesh, example, total_steps)
  return float(update.lower(abstract_state, abstract_batch).cost_analysis()["flops"])


def _format_results(results: dict[str, float]) -> str:
  """One line per evaluated dataset: '  zeroshot/cifar10: top1 0.912  top5 0.998 ...'."""
  groups: dict[str, list[str]] = {}
  for key, value in sorted(results.items()):
    group, _, name = key.rpartition("/")
    groups.setdefault(group, []).append(f"{name} {value:.3f}")
  return "\n".join(f"  {group}: " + "  ".join(items) for group, items in groups.items())


def _print(*args) -> None:
  if jax.process_index() == 0:
    print(*args, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Trains (or resumes) and returns the final evaluation metrics."""
  args, config = parse_args(sys.argv[1:] if argv is None else argv)
  distributed.initialize_from(args)

  # --- Mesh and config checks.
  mesh = sharding_lib.make_mesh(config.get("mesh") or (("data", -1),))
  config_lib.validate(config, mesh.devices.size)
  total_steps = config_lib.resolve_steps(config, "total", config.batch_size)
  workdir = os.path.abspath(args.workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_lib.to_json(config))
  _print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} over "
         f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}")

  # --- Input.
  train_iter = loader.make_input(config.input, config.batch_size)
  vocab = tok_lib.get(config.input.get("tokenizer") or tok_lib.SHAPES_MODEL).vocab_size
  if config.model.text.vocab_size < vocab:
    raise config_lib.ConfigError(f"config.model.text.vocab_size={config.model.text.vocab_size} "
                                 f"is smaller than the tokenizer's {vocab} pieces")
  first = train_iter.batch(0)
  example = {k: jnp.zeros((1, *v.shape[1:]), v.dtype) for k, v in first.items()}

  # --- Model, optimiser, sharded state.
  model, abstract_state, init_fn, update = build(config, mesh, example, total_steps)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  abstract_batch = {k: jax.ShapeDtypeStruct((config.batch_size, *v.shape[1:]), v.dtype,
                                            sharding=batch_sharding) for k, v in first.items()}
  flops_per_step = model_flops_per_step(config, mesh, abstract_batch)
  peak = metrics.peak_flops(jax.devices()[0].device_kind)

  # --- Restore the newest checkpoint, or initialise.
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_ckpts)
  if ckpt.latest_step() is not None:
    state, data_state, step = ckpt.restore(abstract_state)
    train_iter.set_state(data_state)
    _print(f"resumed from {ckpt.directory}/{step}")
  else:
    state, step = init_fn(jax.random.key(config.seed)), 0
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  _print(f"model: {num_params / 1e6:.2f}M parameters; loss: {config.loss}; "
         f"{total_steps} steps of batch {config.batch_size}")

  # --- Evaluators.
  embedder = Embedder(model, mesh, config.get("eval_batch_size") or 256)
  defaults = dict(image_size=first["image"].shape[1], max_len=config.input.max_len,
                  tokenizer=config.input.get("tokenizer") or tok_lib.SHAPES_MODEL)
  evals = evaluators.make(config.evals, embedder, defaults)

  def run_evals(step: int, final: bool) -> dict[str, float]:
    results = {}
    for name, (evaluator, every) in evals.items():
      if final or step % (every or config.eval_steps) == 0:
        results.update(evaluator.run(state["params"]))
    return results

  # --- Training loop.
  writer = metrics.Writer(workdir, resume_step=step)
  clock = metrics.Throughput(config.batch_size, step, total_steps)
  results: dict[str, float] = {}
  while step < total_steps:
    batch = loader.to_global(next(train_iter), batch_sharding)
    state, measured = update(state, batch)
    step += 1
    row = {}
    if step % config.log_training_steps == 0 or step == total_steps or step == 1:
      speed = clock.measure(step)
      row = {f"train/{k}": float(v) for k, v in jax.device_get(measured).items()}
      speed.update(metrics.utilisation(flops_per_step, speed["step_time"], jax.device_count(),
                                       peak))
      row.update({f"train/{k}": v for k, v in speed.items()})
      if hasattr(train_iter, "skipped"):  # Bad records skipped so far, over all processes.
        row["data/skipped"] = int(np.sum(multihost_utils.process_allgather(
            np.int64(train_iter.skipped))))
      eta = ("(includes compilation)" if step == 1 else
             f"| ETA {metrics.format_duration(speed['eta_sec'])}")
      _print(f"step {step:6d}/{total_steps} | loss {row['train/loss']:.4f} | "
             f"t {row['train/t']:.2f} | b {row['train/b']:.2f} | lr {row['train/lr']:.2e} | "
             f"{speed['img_per_sec']:.0f} img/s" +
             (f" | MFU {speed['mfu']:.1%}" if "mfu" in speed else "") + f" {eta}")
    with clock.paused():
      if step % config.ckpt_steps == 0 or step == total_steps:
        ckpt.save(step, state, train_iter.get_state())
      results = run_evals(step, final=step == total_steps)
      if results:
        row.update(results)
        if step < total_steps:  # The final results are printed once, below.
          _print(_format_results(results))
    if row:
      writer.write(step, row)
  if not results:  # Resumed at (or past) the end: evaluate the final state once more.
    results = run_evals(step, final=True)
  ckpt.close()
  writer.close()
  train_iter.close()
  _print("final evaluation:")
  for k, v in sorted(results.items()):
    _print(f"  {k:45s} {v:.4f}")
  return results


if __name__ == "__main__":
  try:
    main()
  except (config_lib.ConfigError, ckpt_lib.CheckpointMismatch) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
