"""The optax chain from the config: schedule, clipping, Adam(W), decoupled weight decay.

update = -lr(t) * lr_mult * adam(g)  -  wd * wd_mult * (lr(t) / lr) * param

so `config.wd` is the weight decay itself, following the learning-rate schedule's shape but not
its scale (big_vision's convention). `lr_mults` and `wd_mults` are (regex, multiplier) rules over
parameter names (see pytree.py); unmatched parameters get 1.0 for lr and 0.0 for wd. The chain
is built for the trainable parameters only: frozen ones (config.frozen, an lr multiplier of 0;
see train.trainable_mask) have no optimiser state and no weight decay.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from big_vision_lite import pytree
from big_vision_lite.errors import ConfigError

DECAYS = ("cosine", "rsqrt", "linear", "constant")  # config.schedule.decay_type (schema.py)


def make_schedule(lr: float, total_steps: int, warmup_steps: int = 0, decay_type: str = "cosine",
                  timescale: int = 10_000, min_lr: float = 0.0) -> Callable[[jax.Array], jax.Array]:
  """Linear warmup to `lr`, then cosine / rsqrt / linear decay (to `min_lr`) or constant
  (`decay_type`, one of DECAYS)."""
  if warmup_steps >= total_steps:
    raise ConfigError(f"config.schedule.warmup_steps={warmup_steps} must be shorter than the run "
                      f"({total_steps} steps)")

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1) / max(warmup_steps, 1)) if warmup_steps else 1.0
    frac = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    if decay_type == "cosine":
      decay = min_lr / lr + (1 - min_lr / lr) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
    elif decay_type == "linear":
      decay = min_lr / lr + (1 - min_lr / lr) * (1 - frac)
    elif decay_type == "rsqrt":
      decay = jnp.sqrt(timescale / jnp.maximum(step - warmup_steps + timescale, timescale))
    else:
      decay = 1.0
    return lr * warm * decay

  return schedule


def make_optimizer(config: ml_collections.ConfigDict, params, total_steps: int,
                   warmup_steps: int = 0):
  """Returns (optax transform, lr schedule) for `params` from the (resolved) config; the
  durations come from `config.durations`."""
  sc = config.schedule
  schedule = make_schedule(config.lr, total_steps, warmup_steps, sc.decay_type, sc.timescale,
                           sc.min_lr)
  lr_mults = pytree.rule_tree(config.lr_mults, params, 1.0)
  wd_mults = pytree.rule_tree(config.wd_mults, params, 0.0)
  opt = config.optax
  if opt.name == "adam":
    inner = optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps)
  else:  # 'sgd': the schema allows no other name.
    inner = optax.trace(decay=opt.momentum)
  chain = [inner]
  if config.grad_clip_norm:
    chain.insert(0, clip_by_global_norm(config.grad_clip_norm))
  chain.append(_scale_by_tree(lr_mults))
  if config.wd:
    chain.append(_add_decayed_weights(jax.tree.map(lambda m: m * config.wd / config.lr, wd_mults)))
  chain.append(optax.scale_by_schedule(lambda step: -schedule(step)))
  return optax.chain(*chain), schedule


def _scale_by_tree(mults) -> optax.GradientTransformation:
  """Multiplies each update by its parameter's multiplier."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u if m == 1 else u * m, updates, mults), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _add_decayed_weights(coefs) -> optax.GradientTransformation:
  """Adds coef * param to each update (decoupled weight decay, before the lr scaling)."""
  def update(updates, state, params):
    return jax.tree.map(lambda u, p, c: u + c * p if c else u, updates, params, coefs), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """Scales the updates to a global norm of at most `max_norm`. The update step passes the
  norm it already has (`tx.update(..., grad_norm=norm)`), so it is computed once a step."""
  def update(updates, state, params=None, grad_norm=None):
    del params
    norm = optax.global_norm(updates) if grad_norm is None else grad_norm
    scale = jnp.minimum(1.0, max_norm / norm)
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), state
  return optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), update)
