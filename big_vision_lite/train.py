"""Trains a two-tower contrastive model (SigLIP sigmoid or CLIP softmax loss).

  python -m big_vision_lite.train --config configs/siglip_shapes.py --workdir DIR [--config.KEY=VALUE ...]

Re-running the same command on the same DIR resumes from the newest checkpoint that restores.
Multi-process: add --coordinator_address HOST:PORT --num_processes N --process_id I to each
process, launch under SLURM (detected from the environment), or pass --distributed on a TPU VM
pod slice (JAX detects the cluster). See launch/.

Exit codes: 0 finished; 2 a problem with the config, data, checkpoint or workdir (the message
says which and how to fix it); 3 stopped after `max_nonfinite_steps` consecutive non-finite
steps; 4 a checkpoint (or metrics.jsonl) could not be written; 75 stopped by SIGTERM or
SIGINT: after saving a checkpoint, or during start-up, before any update step (run the same
command to resume). A resume whose config differs from the run's is refused (exit 2) with the
differences; --accept_config_changes takes a changed total_steps, lr, wd, grad_clip_norm or
schedule and records it in WORKDIR/config_changes.jsonl. See docs/faults.md.
"""

if __name__ == "__main__":
  # Run as a program: a SIGTERM or SIGINT while the libraries below load (seconds) is a clean
  # stop too (interrupt.py imports nothing heavy).
  from big_vision_lite import interrupt as _interrupt
  _STOP = _interrupt.StopRequest().__enter__()

import bisect
import contextlib
import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import errors, files, interrupt, job, lock, metrics, objectives, optim, pytree
from big_vision_lite import sharding as sharding_lib
from big_vision_lite.data import loader, sources
from big_vision_lite.models import lora
from big_vision_lite.objectives import teacher as teacher_lib
from big_vision_lite.models.two_towers import TwoTowers


class NonFiniteLoss(errors.Error):
  """Too many consecutive update steps had a non-finite loss or gradient."""

  exit_code = 3


class Interrupted(errors.Error):
  """Stopped by a signal after saving a checkpoint; the same command resumes."""

  exit_code = interrupt.EXIT_CODE
  label = "stopped"


def trainable_mask(config, params) -> dict:
  """True for every parameter that trains: not frozen (`config.frozen`, an lr multiplier of 0)
  and, with LoRA, an adapter or a base parameter named in `lora.train`."""
  frozen = [(r, False) for r in config.frozen] + [(r, False) for r, m in config.lr_mults if m == 0]

  def trains(name: str, _) -> bool:
    if not pytree.match_rules(frozen, name, True):
      return False
    if config.lora and not name.startswith(lora.KEY + "/"):
      return pytree.match_rules([(r, True) for r in config.lora.train], name, False)
    return True

  return pytree.map_with_names(trains, params)


def create_train_state(config, model: TwoTowers, mesh, total_steps: int, warmup_steps: int,
                       terms=()):
  """Returns (tx, schedule, abstract_state, state_shardings, init_fn, mask, term_params).

  The state is {'params', 'opt', 'step', 'nonfinite'} ('nonfinite': consecutive non-finite
  steps so far), with 'teacher' (the EMA copy of the parameters the terms read from it) and
  'buffers' ({term: its buffers}) when a term has them; `init_fn(rng)` creates it directly with
  its shardings (the teacher like the parameters it copies). The parameters are the model's and
  those the `terms` (objectives.Term) add beside them (e.g. `dec/...`): `term_params(rng)` gives
  the latter ({term name: {top-level name: tree}}). `mask` marks the parameters that train: the
  optimiser state covers only those (frozen parameters have no moments and no weight decay) and
  only they get gradients.
  """
  example = model.example_inputs()
  outputs = jax.eval_shape(lambda rng: _outputs(*model.apply(
      model.init(rng, *example), *example)), jax.random.key(0))
  model_keys = set(jax.eval_shape(model.init, jax.random.key(0), *example)["params"])

  def term_params(rng):
    return {term.name: term.init(jax.random.fold_in(rng, 2 + i), outputs)
            for i, term in enumerate(terms)}

  def init_params(rng):
    params = model.init(rng, *example)["params"]
    fresh = term_params(rng)
    for term in terms:
      added = fresh[term.name]
      clash = sorted(set(added) & set(params))
      if clash:
        raise ValueError(f"objective {term.name!r} adds parameters {clash} that already exist")
      params = {**params, **added}
    if config.lora:
      model_params = {k: v for k, v in params.items() if k in model_keys}
      params = {**params, lora.KEY: lora.init(model, model_params, example, config.lora.targets,
                                              config.lora.rank, jax.random.fold_in(rng, 1))}
    return params

  abstract_params = jax.eval_shape(init_params, jax.random.key(0))
  mask = trainable_mask(config, abstract_params)
  trainable, _ = pytree.partition(abstract_params, mask)
  if not jax.tree.leaves(trainable):
    raise errors.ConfigError("every parameter is frozen (config.frozen, lr_mults, lora): "
                                 "nothing would train")
  tx, schedule = optim.make_optimizer(config, trainable, total_steps, warmup_steps)

  teacher_keys = objectives.teacher_keys(terms)
  buffers = {t.name: t.buffers() for t in terms if t.buffers()}

  def init_state(rng):
    params = init_params(rng)
    state = {"params": params, "opt": tx.init(pytree.partition(params, mask)[0]),
             "step": jnp.zeros((), jnp.int32), "nonfinite": jnp.zeros((), jnp.int32)}
    if teacher_keys:
      state["teacher"] = {k: params[k] for k in teacher_keys}
    if buffers:
      state["buffers"] = buffers
    return state

  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  shardings = sharding_lib.state_shardings(mesh, abstract_state, abstract_params,
                                           config.sharding_rules)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                abstract_state, shardings)
  init_fn = jax.jit(init_state, out_shardings=shardings)
  return tx, schedule, abstract_state, shardings, init_fn, mask, term_params


def _outputs(zimg, ztxt, aux) -> dict:
  """The model's outputs as the objectives read them: {'zimg', 'ztxt', 't', 'b', 'img', ...}."""
  return {"zimg": zimg, "ztxt": ztxt, **aux}


def make_update_fn(apply, terms: list[objectives.Term], tx, schedule, state_shardings, mesh,
                   mask, total_steps: int, accum_steps: int = 1, seed: int = 0,
                   term_params=None, momentum: float = 0.):
  """The update step (state donated): (state, batch) -> (state, metrics), a `PhasedUpdate`.

  The loss is the sum of weight x loss over the `terms` that have started (a term starting at
  fraction s of training has weight 0 before step round(s x total_steps)); metrics carry each
  term's own loss as `loss_<name>` and `loss` the weighted sum (0 for a term not started, or of
  weight 0). Per-example random draws of the terms (Term.prepare) come from (seed, step) over
  the whole global batch. A term is not computed before its start: the step is compiled once
  per phase of training (the steps between two terms' starts), each with the terms started by
  then and no others. At a term's start step its parameters are re-initialised
  (`term_params(key(seed))`, as at step 0) and its buffers reset, and the EMA teacher (when
  terms read one) is copied from the student when they start.

  The teacher's outputs (Term.teach) are computed before the gradient, outside it: no gradient
  reaches the teacher. After an applied step, teacher <- momentum * teacher + (1 - momentum) *
  student, inside the same branch as the optimiser update (in place, no copy of the teacher).

  With `accum_steps` > 1 the gradient is still that of the full global batch, not an average
  of per-micro-batch losses: all micro-batches are embedded first (activations discarded) for
  the terms that couple the batch (the contrastive loss), their loss and its gradient w.r.t.
  those features are taken over the full batch, then each micro-batch is run again and
  back-propagated with its slice of those gradients, together with the per-example terms (means
  over examples, so their micro-batch means average to the full batch's). Activation memory is
  one micro-batch's; the cost is one extra forward of the towers.

  A step whose loss or gradient norm is not finite is not applied: parameters, optimiser
  state, teacher and buffers keep their values (the update runs under `lax.cond`, no host round
  trip), the step counter advances, and `nonfinite` counts such steps in a row. The gradient's
  global norm is computed once, for this test, the metrics and the clipping (optim.py).

  Gradients are taken with respect to the trainable parameters (`mask`) only: a frozen tower
  runs forward only, and frozen weights get no gradient.
  """
  batch_spec = sharding_lib.batch_sharding(mesh)
  text = any("text" in t.towers for t in terms)
  starts = {t.name: round(t.start * total_steps) for t in terms}
  coupled = [t for t in terms if t.coupled]
  local = [t for t in terms if not t.coupled]
  readers = [t for t in terms if t.teacher]
  teacher_keys = objectives.teacher_keys(terms)
  teacher_start = min((starts[t.name] for t in readers), default=0)
  late = [t for t in terms if starts[t.name] > 0]
  if late and term_params is None:
    raise ValueError("terms that start after step 0 need term_params (their fresh parameters)")

  # Phase k runs from boundaries[k - 1] (0 for k = 0) up to the next boundary.
  boundaries = sorted({s for s in starts.values() if s > 0})

  def forward(params, batch):
    return _outputs(*apply(params, batch["image"], batch["labels"] if text else None))

  def zeros_of(fn):
    """Zeros of fn()'s shapes; fn is traced for its shapes only, never computed."""
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fn))

  def maybe(on: bool, fn):
    return fn() if on else zeros_of(fn)

  def prepare(batch, step, w):
    rng = jax.random.fold_in(jax.random.key(seed), step)
    for i, term in enumerate(terms):
      batch = {**batch, **maybe(w[term.name] > 0, lambda term=term, i=i: term.prepare(
          batch, jax.random.fold_in(rng, i)))}
    return batch

  def local_losses(params, batch, out, w):
    total, measured = jnp.zeros((), jnp.float32), {}
    for term in local:
      loss, m = maybe(w[term.name] > 0, lambda term=term: term.loss(params, batch, out))
      measured.update(m, **{f"loss_{term.name}": loss})
      total = total + w[term.name] * loss
    return total, measured

  def coupled_losses(features, w):
    total, measured = jnp.zeros((), jnp.float32), {}
    for term in coupled:
      loss, m = term.loss_of_features(features[term.name])
      measured.update(m, **{f"loss_{term.name}": loss})
      total = total + w[term.name] * loss
    return total, measured

  def loss_and_metrics(params, batch, w):
    out = forward(params, batch)
    features = {t.name: t.features(params, batch, out) for t in coupled}
    total_c, measured = coupled_losses(features, w)
    total_l, measured_l = local_losses(params, batch, out, w)
    return total_c + total_l, {**measured, **measured_l}

  def grads_full_batch(trainable, frozen, batch, w):
    return jax.value_and_grad(lambda p: loss_and_metrics(pytree.merge(p, frozen), batch, w),
                              has_aux=True)(trainable)

  def grads_accumulated(trainable, frozen, batch, w):
    # Micro-batch m takes rows m, m + accum, ...: every device keeps holding its own rows.
    micro = jax.tree.map(lambda x: jnp.swapaxes(
        x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1), batch)

    def coupled_features(p, mb):
      params = pytree.merge(p, frozen)
      out = forward(params, mb)
      return {t.name: t.features(params, mb, out) for t in coupled}

    # [accum, B/accum, ...] per-example features; [accum] batch-wide scalars (t, b).
    stacked = jax.lax.map(lambda mb: coupled_features(trainable, mb), micro)
    flat = lambda z: (z[0] if z.ndim == 1 else jax.lax.with_sharding_constraint(
        z.reshape(-1, *z.shape[2:]), batch_spec))
    (loss_c, measured), dfeatures = jax.value_and_grad(
        lambda f: coupled_losses(f, w), has_aux=True)(jax.tree.map(flat, stacked))
    # Each micro-batch's slice of the features' gradient; a scalar's gradient is shared.
    dstacked = jax.tree.map(lambda d, z: (jnp.broadcast_to(d / accum_steps, z.shape) if z.ndim == 1
                                          else d.reshape(z.shape)), dfeatures, stacked)

    def micro_step(p, mb):
      params = pytree.merge(p, frozen)
      out = forward(params, mb)
      features = {t.name: t.features(params, mb, out) for t in coupled}
      total_l, measured_l = local_losses(params, mb, out, w)
      return (features, total_l), measured_l

    def backprop(carry, xs):
      grads, total, measured_sum = carry
      mb, dfeat = xs
      (_, total_l), vjp, measured_l = jax.vjp(lambda p: micro_step(p, mb), trainable,
                                              has_aux=True)
      (g,) = vjp((dfeat, jnp.ones((), jnp.float32) / accum_steps))
      measured_sum = jax.tree.map(jnp.add, measured_sum, measured_l)
      return (jax.tree.map(jnp.add, grads, g), total + total_l, measured_sum), None

    measured_shape = jax.eval_shape(lambda mb: micro_step(trainable, mb)[1],
                                    jax.tree.map(lambda x: x[0], micro))
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
    (grads, total_l, measured_l), _ = jax.lax.scan(
        backprop, (zeros(trainable), jnp.zeros((), jnp.float32), zeros(measured_shape)),
        (micro, dstacked))
    measured.update(jax.tree.map(lambda x: x / accum_steps, measured_l))
    return (loss_c + total_l / accum_steps, measured), grads

  grads_of = grads_full_batch if accum_steps == 1 else grads_accumulated

  def restart(state):
    """The state at the start step of the `late` terms starting now: their parameters fresh,
    their buffers reset, the teacher copied from the student when its readers start."""
    step, fresh = state["step"], term_params(jax.random.key(seed))
    params, buffers = dict(state["params"]), dict(state.get("buffers", {}))
    pick = lambda now, new, old: jax.tree.map(lambda n, o: jnp.where(now, n, o), new, old)
    for t in late:
      now = step == starts[t.name]
      params.update({k: pick(now, v, params[k]) for k, v in fresh[t.name].items()})
      if t.name in buffers:
        buffers[t.name] = pick(now, t.buffers(), buffers[t.name])
    out = {**state, "params": params}
    if buffers:
      out["buffers"] = buffers
    if readers and teacher_start > 0:
      out["teacher"] = pick(step == teacher_start, {k: params[k] for k in teacher_keys},
                            state["teacher"])
    return out

  def teach(state, batch, w):
    """The batch with the teacher's outputs of the readers that have started; their buffers
    after this step."""
    buffers = dict(state.get("buffers", {}))
    for t in readers:
      fn = lambda t=t: t.teach(state["teacher"], state["buffers"].get(t.name, {}), batch)
      entries, new = fn() if w[t.name] > 0 else (zeros_of(lambda fn=fn: fn()[0]), None)
      batch = {**batch, **entries}
      if new:
        buffers[t.name] = new
    # `teacher_*` entries are shared between the readers (the teacher's tower outputs), not
    # read by the losses.
    return {k: v for k, v in batch.items() if not k.startswith("teacher_")}, buffers

  def apply_updates(trainable, frozen, opt, teacher, grads, grad_norm, taught: bool):
    updates, opt = tx.update(grads, opt, trainable, grad_norm=grad_norm)
    trainable = optax.apply_updates(trainable, updates)
    if taught:  # The EMA of the student, once the teacher's readers have started.
      student = pytree.merge(trainable, frozen)
      teacher = teacher_lib.ema(teacher, {k: student[k] for k in teacher_keys}, momentum)
    return trainable, opt, teacher

  def update(state, batch, first: int):
    """The step of the phase that begins at step `first`."""
    step = state["step"]
    w = {t.name: t.weight if starts[t.name] <= first else 0. for t in terms}
    if first > 0:  # The terms starting at this phase's first step restart there.
      state = jax.lax.cond(step == first, restart, lambda s: s, state)
    trainable, frozen = pytree.partition(state["params"], mask)
    batch, buffers = teach(state, prepare(batch, step, w), w)
    (loss, measured), grads = grads_of(trainable, frozen, batch, w)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A branch, not a select over every parameter and moment (which would make XLA copy each
    # old value first): the applied step updates the donated buffers in place.
    teacher = state.get("teacher", {})
    taught = bool(readers) and teacher_start <= first
    trainable, opt, teacher, buffers = jax.lax.cond(
        finite, lambda *a: (*apply_updates(*a, taught), buffers),
        lambda p, f, o, t, g, n: (p, o, t, state.get("buffers", {})),
        trainable, frozen, state["opt"], teacher, grads, grad_norm)
    measured.update(loss=loss, lr=schedule(step), grad_norm=grad_norm)
    new = {"params": pytree.merge(trainable, frozen), "opt": opt, "step": step + 1,
           "nonfinite": jnp.where(finite, 0, state["nonfinite"] + 1)}
    if "teacher" in state:
      new["teacher"] = teacher
    if "buffers" in state:
      new["buffers"] = buffers
    return new, measured

  return PhasedUpdate([
      jax.jit(functools.partial(update, first=first), donate_argnums=0,
              in_shardings=(state_shardings, batch_spec),
              out_shardings=(state_shardings, sharding_lib.replicated(mesh)))
      for first in [0, *boundaries]], boundaries)


class PhasedUpdate:
  """The update step, one jitted function per phase of training: phase k runs from step
  `boundaries[k - 1]` (0 for k = 0) to the next boundary, with the terms that have started by
  then compiled in and the others left out. (Not one step with a lax.cond around each late
  term: XLA's CPU backend runs a computation inside a conditional several times slower, 4.7x
  measured for SILC's local views.) `at(step)` is the phase's jitted step; calling the object
  reads the step from the state first (one device-to-host read; the trainer uses `at`)."""

  def __init__(self, steps: list, boundaries: list[int]):
    self.steps, self.boundaries = steps, boundaries

  def phase(self, step: int) -> int:
    return bisect.bisect_right(self.boundaries, step)

  def at(self, step: int):
    return self.steps[self.phase(step)]

  def lower(self, state, batch, step: int = 0):
    """The lowering of the phase of `step` (default: the first)."""
    return self.at(step).lower(state, batch)

  def __call__(self, state, batch):
    if len(self.steps) == 1:
      return self.steps[0](state, batch)
    return self.at(int(np.asarray(state["step"].addressable_data(0))))(state, batch)


def build(config, mesh, total_steps: int, warmup_steps: int = 0):
  """(model, abstract_state, init_fn, update, mask): everything a config trains with on a mesh
  (`mask`: which parameters train)."""
  model = job.build_model(config)
  terms = objectives.make_terms(config, mesh)
  tx, schedule, abstract_state, shardings, init_fn, mask, term_params = create_train_state(
      config, model, mesh, total_steps, warmup_steps, terms)
  update = make_update_fn(job.apply_fn(config, model), terms, tx, schedule, shardings, mesh,
                          mask, total_steps, config.grad_accum_steps, config.seed,
                          term_params, config.teacher.momentum)
  return model, abstract_state, init_fn, update, mask


def abstract_batch(config, mesh, seq_len: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch the update step takes: images at the model's size (a NaFlex model: patches
  at `seq_len`, default the longest of input.seq_lengths) and what the objectives read (token
  ids at the text length, labels, ...), sharded over `mesh` if given."""
  size, n = config.model.image.image_size, config.batch_size
  sharding = sharding_lib.batch_sharding(mesh) if mesh is not None else None
  keys = objectives.batch_keys(objectives.make_terms(config, mesh))
  patch = job.naflex_patch_size(config)
  if patch is None:
    image = jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32, sharding=sharding)
  else:
    seq_len = seq_len or max(config.input.get("seq_lengths") or [0]) or None
    if seq_len is None:
      raise config_lib.ConfigError("model.image.naflex=True trains on input.seq_lengths: set it, "
                                   "e.g. --config.input.seq_lengths='(256,)'")
    image = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in
             loader.NaFlex(patch, [seq_len]).spec(n).items()}
  return {"image": image,
          **{k: jax.ShapeDtypeStruct((n, *spec.shape), spec.dtype, sharding=sharding)
             for k, (spec, _) in keys.items()}}


def _is_plain(config) -> bool:
  """No remat, scan, accumulation or chunked loss: XLA's FLOP count is the model's."""
  towers = (config.model.image, config.model.text)
  return (config.grad_accum_steps == 1 and config.loss in ("sigmoid", "softmax") and
          all(t.get("remat_policy", "none") == "none" and not t.get("scan") for t in towers)
          and all(t.plain for t in objectives.make_terms(config)))


def compile_update(config, mesh, update, abstract_state, seq_len: int | None = None,
                   step: int = 0):
  """(the update step of `step`'s phase compiled ahead of time, model FLOPs per step), for
  NaFlex batches of `seq_len` patches per image. For a plain config the FLOPs come from the
  same lowering, so the model is traced once."""
  lowered = update.lower(abstract_state, abstract_batch(config, mesh, seq_len), step)
  flops = (float(lowered.cost_analysis()["flops"]) if _is_plain(config)
           else model_flops_per_step(config, mesh, seq_len, step))
  return lowered.compile(), flops


def model_flops_per_step(config, mesh, seq_len: int | None = None, step: int = 0) -> float:
  """Model FLOPs of one update step: XLA's cost analysis of the plain step (no remat, no
  scan, no accumulation, dense losses: recomputation is not counted and no loop, such as the
  chunked loss's ring, is undercounted)."""
  plain = config.copy_and_resolve_references()
  for tower in ("image", "text"):
    for key, value in (("scan", False), ("remat_policy", "none")):
      if key in plain.model[tower]:  # Not every tower has them (the ResNet has neither).
        plain.model[tower][key] = value
  plain.loss = "sigmoid" if "sigmoid" in plain.loss else "softmax"
  plain.grad_accum_steps = 1
  for term in objectives.make_terms(plain):
    plain.objectives[term.name].update(term.plain_settings())
  total_steps, _, _ = config_lib.durations(plain)  # The same phases as the run's.
  _, abstract_state, _, update, _ = build(plain, mesh, total_steps)
  return float(update.lower(abstract_state, abstract_batch(plain, mesh, seq_len), step)
               .cost_analysis()["flops"])


def step_batch(config, spec) -> list[str]:
  """The batch keys the update step takes, after checking that the input (`spec`: its
  element_spec) gives each at the shape the model and the objectives expect (square images or
  NaFlex patches, as the model takes)."""
  naflex = job.naflex_patch_size(config) is not None
  if naflex != isinstance(spec.get("image"), dict):
    raise sources.DataError(
        "model.image.naflex=True takes NaFlex patches: set input.seq_lengths (e.g. '(256,)')"
        if naflex else "the input gives NaFlex patches (input.seq_lengths or a naflex op) but "
        "the model takes square images: set model.image.naflex=True or drop them")
  want = abstract_batch(config, None)
  readers = objectives.batch_keys(objectives.make_terms(config))
  for key, shape in want.items():
    if key == "image":
      what, fix = "images", "resize(...) in config.input.pp or model.image.image_size"
      if naflex:
        got, patch = spec["image"]["patches"][0][-1], shape["patches"].shape[-1]
        if got != patch:
          raise sources.DataError(f"the input gives NaFlex patches of {got} values, the model "
                                  f"takes {patch} (P*P*3): patchify with the model's patch size")
        continue
    else:
      spec_, reader = readers[key]
      what, fix = spec_.what, spec_.fix
      if key not in spec:
        raise sources.DataError(
            f"objectives.{reader} reads {what} ({key!r}), which the input does not give (it "
            f"gives {sorted(spec)}): change {fix}")
    got = tuple(spec[key][0][1:]) if key in spec else None
    if got != shape.shape[1:]:
      raise sources.DataError(f"the input gives {what} of shape {got} per example, the model "
                              f"takes {shape.shape[1:]}: change {fix}")
  return list(want)


def _nonfinite_report(step: int, streak: int, measured, last_saved: int | None, where: str) -> str:
  m = {k: float(v) for k, v in jax.device_get(measured).items()}
  saved = f"the last good checkpoint is {where}/{last_saved}" if last_saved is not None else \
      "no checkpoint was saved"
  tb = f", t {m['t']}, b {m['b']}" if "t" in m else ""
  return (f"{streak} consecutive update steps ({step - streak + 1}-{step}) had a non-finite loss "
          f"or gradient and were not applied; at step {step}: loss {m['loss']}, gradient norm "
          f"{m['grad_norm']}{tb}. The parameters are those of step "
          f"{step - streak}; {saved}. Fix the cause (a lower lr or temperature_init, "
          "grad_clip_norm, or the data), then resume with the same command.")


def main(argv: list[str] | None = None,
         stop: interrupt.StopRequest | None = None) -> dict[str, Any]:
  """Trains (or resumes) and returns the final evaluation metrics. `stop`: signal handling
  installed earlier (by the program, before its imports); else installed here."""
  with contextlib.ExitStack() as stack:
    if stop is None:
      stop = stack.enter_context(interrupt.StopRequest())
    stop.phase = "reading the config"
    parser = job.argument_parser(__doc__)
    parser.add_argument("--accept_config_changes", action="store_true",
                        help="resume a run with a changed total_steps, lr, wd, grad_clip_norm "
                        "or schedule\n(each change is recorded with its step in "
                        f"WORKDIR/{job.CONFIG_CHANGES})")
    args, config = job.parse(parser, sys.argv[1:] if argv is None else argv)
    stop.phase = "joining the job"
    mesh = job.start(args, config)
    stop.joined(jax.process_count())
    total_steps, warmup_steps, warnings = config_lib.durations(config)
    workdir = os.path.abspath(args.workdir)
    with stop.critical():  # One trainer per workdir (a second one is refused at start).
      held = stack.enter_context(lock.hold(workdir))
      stop.on_stop.append(held.release)
    return _train(config, mesh, workdir, total_steps, warmup_steps, warnings, stop,
                  args.accept_config_changes)


def _train(config: ml_collections.ConfigDict, mesh, workdir: str, total_steps: int,
           warmup_steps: int, warnings: list[str], stop: interrupt.StopRequest,
           accept_changes: bool) -> dict[str, Any]:
  for warning in warnings:
    job.print0(f"warning: {warning}")
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_ckpts)
  newest = ckpt.latest_step()
  stop.where = (f" (the newest checkpoint is {ckpt.directory}/{newest})" if newest is not None
                else "")
  # A resume with a changed config is refused before anything is built or written.
  changes = job.resume_changes(workdir, config, accept_changes, newest, total_steps)

  # --- Input. (The phase is set before the devices line, so a signal after that line finds it.)
  stop.phase = "setting up the input"
  job.print0(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} over "
             f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}")
  job.check_vocab(config)
  train_iter = loader.make_input(config.input, config.batch_size,
                                 image_size=config.model.image.image_size,
                                 max_len=config.model.text.max_len,
                                 patch_size=job.naflex_patch_size(config))
  keys = step_batch(config, train_iter.element_spec)

  # --- Model, optimiser, sharded state.
  model, abstract_state, init_fn, update, mask = build(config, mesh, total_steps, warmup_steps)
  # The evaluators are built (their datasets checked) before compiling and before anything is
  # written: a typo in config.evals costs seconds and leaves the workdir as it was.
  stop.phase = "building the evaluators"
  evals = job.build_evaluators(config, model, mesh)
  stop.phase = "compiling the update step"
  # The step compiled once per NaFlex sequence length (None: square images), when a batch of
  # that length first comes; the longest now, so that the memory printed is the most it takes.
  # Likewise once per phase (objectives starting later: PhasedUpdate), when its first step comes.
  compiled = {}

  def compiled_for(seq_len: int | None, step: int):
    key = (seq_len, update.phase(step))
    if key not in compiled:
      if key[1] and not any(k[1] == key[1] for k in compiled):
        started = [n for n, s in config.objectives.items()
                   if round(s["start"] * total_steps) == update.boundaries[key[1] - 1]]
        job.print0(f"step {step}: compiling the update step with {started} started")
      compiled[key] = compile_update(config, mesh, update, abstract_state, seq_len, step)
    return compiled[key]

  lengths = config.input.get("seq_lengths") if job.naflex_patch_size(config) else None
  memory_mib = metrics.compiled_memory(
      compiled_for(max(lengths) if lengths else None, newest or 0)[0]) / 2**20
  peak = metrics.peak_flops(jax.devices()[0].device_kind)

  # --- Restore the newest checkpoint, or initialise.
  # A damaged checkpoint is skipped (with a warning) for the newest one that restores.
  stop.phase = "restoring the checkpoint" if newest is not None else "initialising"
  restored = ckpt.restore(abstract_state)
  if restored is not None:
    state, data_state, step = restored
    train_iter.set_state(data_state)
    job.print0(f"resumed from {ckpt.directory}/{step}")
  else:
    state, step = init_fn(jax.random.key(config.seed)), 0
    if config.model_init:
      stop.phase = "loading config.model_init"
      state = {**state, "params": job.load_model_init(
          config, state["params"], mesh, sharding_lib.shardings_of(state["params"]))}
      if "teacher" in state:  # The teacher starts as the loaded student.
        state["teacher"] = jax.jit(lambda p: {k: jnp.copy(p[k]) for k in state["teacher"]})(
            state["params"])
  stop.phase = "writing config.json and opening the metrics"
  with stop.critical():
    job.record_changes(workdir, step, changes)
    if jax.process_index() == 0:  # Written once the checkpoint (if any) fits this config.
      files.write_atomic(os.path.join(workdir, "config.json"), config_lib.to_json(config))
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  trainable = sum(x.size for x in jax.tree.leaves(pytree.partition(abstract_state["params"],
                                                                   mask)[0]))
  objective = "objectives: " + ", ".join(
      f"{name} (loss {config.loss})" if name == "contrastive" else name
      for name in sorted(config.objectives))
  job.print0(f"model: {num_params / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable "
             f"({trainable / num_params:.1%}); {objective}; {total_steps} steps of batch "
             f"{config.batch_size}; update step {memory_mib:.1f} MiB per device")

  def run_evals(step: int, final: bool) -> dict[str, float]:
    results = {}
    for evaluator, every in evals.values():
      if final or step % (every or config.eval_steps) == 0:
        results.update(evaluator.run(state["params"]))
    return results

  # --- Training loop.
  with stop.critical():
    writer = metrics.Writer(workdir, resume_step=step)
  stop.phase = "starting the first step"
  clock = metrics.Throughput(config.batch_size, step, total_steps)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  # Non-finite steps are counted on the device; the host looks at the count every few steps.
  check_every = min(config.log_training_steps, config.max_nonfinite_steps)
  last_saved = ckpt.latest_step()
  results: dict[str, float] = {}
  stop.training()
  with _closing(train_iter, writer, ckpt):
    while step < total_steps:
      local = next(train_iter)
      batch = loader.to_global({k: local[k] for k in keys}, batch_sharding)
      seq_len = batch["image"]["patches"].shape[1] if isinstance(batch["image"], dict) else None
      update_step, flops_per_step = compiled_for(seq_len, step)
      state, measured = update_step(state, batch)
      step += 1
      ckpt.check()  # A failed asynchronous save stops the run here, not at the next save.
      row = {}
      if step % config.log_training_steps == 0 or step == total_steps or step == 1:
        speed = clock.measure(step)
        row = {f"train/{k}": float(v) for k, v in jax.device_get(measured).items()}
        speed.update(metrics.utilisation(flops_per_step, speed["step_time"],
                                         jax.device_count(), peak))
        row.update({f"train/{k}": v for k, v in speed.items()})
        row["data/skipped"] = int(np.sum(multihost_utils.process_allgather(
            np.int64(train_iter.skipped))))  # Bad records skipped so far, over all processes.
        if step == 1:  # What the run is: sizes that do not change.
          row.update({"train/params": num_params, "train/params_trainable": trainable,
                      "train/memory_per_device_mib": memory_mib})
        eta = f"| ETA {metrics.format_duration(speed['eta_sec'])}"
        model_line = " | ".join(
            [f"{k[len('train/loss_'):]} {v:.4f}" for k, v in row.items()
             if k.startswith("train/loss_") and len(config.objectives) > 1] +
            ([f"t {row['train/t']:.2f} | b {row['train/b']:.2f}"] if "train/t" in row else []) +
            ([f"accuracy {row['train/accuracy']:.3f}"] if "train/accuracy" in row else []))
        job.print0(f"step {step:6d}/{total_steps} | loss {row['train/loss']:.4f} | "
                   f"{model_line} | lr {row['train/lr']:.2e} | "
                   f"{speed['img_per_sec']:.0f} img/s" +
                   (f" | MFU {speed['mfu']:.1%}" if "mfu" in speed else "") + f" {eta}")
      stopping = stop.should_stop(step)
      save = step % config.ckpt_steps == 0 or step == total_steps or stopping
      streak = None
      if save or step % check_every == 0:
        streak = int(state["nonfinite"])
        if streak >= config.max_nonfinite_steps:
          if row:
            writer.write(step, row)
          raise NonFiniteLoss(_nonfinite_report(step, streak, measured, last_saved,
                                                ckpt.directory))
      with clock.paused():
        if save and streak:
          job.print0(f"warning: step {step} not saved: its last {streak} update steps had a "
                     "non-finite loss or gradient")
        elif save:
          ckpt.save(step, state, train_iter.get_state())
          last_saved = step
        if stopping:
          if row:
            writer.write(step, row)
          ckpt.wait()  # The checkpoint is committed before the process exits,
          if jax.process_count() > 1:  # on every process: none exits while another writes.
            multihost_utils.sync_global_devices("stopped after saving")
          raise Interrupted(f"{stop.received or 'SIGTERM'} at step {step}/{total_steps}; "
                            f"checkpoint {ckpt.directory}/{last_saved} is saved. Run the same "
                            "command to resume.")
        results = run_evals(step, final=step == total_steps)
        if results:
          row.update(results)
          if step < total_steps:  # The final results are printed once, below.
            job.print0(job.format_results(results))
      if row:
        writer.write(step, row)
    if not results:  # Resumed at (or past) the end: evaluate the final state once more.
      results = run_evals(step, final=True)
  job.print_results("final evaluation:", results)
  return results


@contextlib.contextmanager
def _closing(train_iter, writer, ckpt):
  """Closes the input, the metrics and the checkpointer however the run ends: closing waits for
  a save still in flight, so a run stopped by an error keeps its last checkpoint. On the error
  path a failure to close is not allowed to hide the error that stopped the run."""
  try:
    yield
  except BaseException:
    for close in (train_iter.close, writer.close, ckpt.close):
      with contextlib.suppress(Exception):
        close()
    raise
  train_iter.close()
  writer.close()
  ckpt.close()


if __name__ == "__main__":
  errors.run(functools.partial(main, stop=_STOP))
