"""LoRA: low-rank adapters on Dense kernels, applied without changing the model's code.

An adapter on a kernel W (input dims flattened to `n`, output dims to `m`) is A [n, r] and
B [r, m]; the layer computes  x W + (alpha / r) (x A) B.  B starts at zero, so a new adapter
leaves the function unchanged. Adapters live beside the parameters under `params['lora']`, in
the same nesting as the modules they adapt (`lora/img/Transformer/encoderblock_0/MlpBlock_0/
Dense_0/{a, b}`), and are applied by intercepting those modules' calls, so attention and MLP
projections of either tower can be adapted and checkpoints keep the model's parameter names.
`merge` folds the adapters into the kernels: the result is a plain model.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from big_vision_lite import pytree

KEY = "lora"
# Attention projections and MLP layers of every Transformer block (and of the MAP head).
DEFAULT_TARGETS = (r".*/MultiHeadDotProductAttention_0/(query|key|value|out)/kernel",
                   r".*/MlpBlock_0/Dense_[01]/kernel")


def _dense_calls(model: nn.Module, params, inputs) -> dict[str, int]:
  """{module path: number of contracted input dims} of every Dense/DenseGeneral call."""
  found = {}

  def spy(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (nn.Dense, nn.DenseGeneral)):
      axis = getattr(module, "axis", -1)
      found["/".join(module.path)] = len(axis) if isinstance(axis, (tuple, list)) else 1
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    jax.eval_shape(lambda p: model.apply({"params": p}, *inputs), params)
  return found


def init(model: nn.Module, params, inputs, targets: Sequence[str], rank: int, rng) -> dict:
  """New adapters (A ~ N(0, 1/n), B = 0) for every Dense kernel whose parameter name matches a
  regex in `targets`; `inputs` are example inputs of `model.apply`."""
  if rank < 1:
    raise ValueError(f"LoRA rank must be >= 1, got {rank}")
  calls = _dense_calls(model, params, inputs)
  kernels = {name[:-len("/kernel")]: x for name, x in pytree.named_leaves(params)
             if name.endswith("/kernel")}
  chosen = sorted(p for p in calls if p in kernels
                  and pytree.match_rules([(t, True) for t in targets], p + "/kernel", False))
  if not chosen:
    raise ValueError(f"LoRA targets {list(targets)} match no Dense kernel; kernels are named like "
                     f"{next(iter(kernels), '?')}/kernel")
  flat = {}
  for k, path in enumerate(chosen):
    shape = np.shape(kernels[path])
    n = math.prod(shape[:calls[path]])
    m = math.prod(shape[calls[path]:])
    a = jax.random.normal(jax.random.fold_in(rng, k), (n, rank), jnp.float32) / math.sqrt(n)
    flat[tuple(path.split("/")) + ("a",)] = a
    flat[tuple(path.split("/")) + ("b",)] = jnp.zeros((rank, m), jnp.float32)
  return traverse_util.unflatten_dict(flat)


def _adapters(adapters) -> dict[str, dict[str, Any]]:
  flat = traverse_util.flatten_dict(adapters)
  out: dict[str, dict[str, Any]] = {}
  for key, value in flat.items():
    out.setdefault("/".join(key[:-1]), {})[key[-1]] = value
  return out


def apply(model: nn.Module, params, *args, alpha: float, **kwargs):
  """`model.apply({'params': ...}, *args)` with the adapters in `params['lora']` (if any) added to
  their layers' outputs, scaled by alpha / rank."""
  base = {k: v for k, v in params.items() if k != KEY}
  if KEY not in params:
    return model.apply({"params": base}, *args, **kwargs)
  by_path = _adapters(params[KEY])

  def adapt(next_fun, args_, kwargs_, context):
    y = next_fun(*args_, **kwargs_)
    ad = by_path.get("/".join(context.module.path)) if context.method_name == "__call__" else None
    if ad is None:
      return y
    x, (a, b) = args_[0], (ad["a"], ad["b"])
    n, rank = a.shape
    k = next(i for i in range(1, x.ndim + 1) if math.prod(x.shape[-i:]) == n)
    low = jnp.dot(jnp.dot(x.reshape(*x.shape[:-k], n), a.astype(x.dtype)), b.astype(x.dtype))
    return y + (low * (alpha / rank)).reshape(y.shape).astype(y.dtype)

  with nn.intercept_methods(adapt):
    return model.apply({"params": base}, *args, **kwargs)


def merge(params, alpha: float) -> dict:
  """The parameters with every adapter folded into its kernel, W + (alpha / r) A B (reshaped to
  the kernel's shape), and no `lora` entry: a plain model."""
  if KEY not in params:
    return params
  flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != KEY})
  for path, ad in _adapters(params[KEY]).items():
    key = tuple(path.split("/")) + ("kernel",)
    kernel = np.asarray(flat[key])
    a, b = np.asarray(ad["a"], np.float64), np.asarray(ad["b"], np.float64)
    delta = (a @ b) * (alpha / a.shape[1])
    flat[key] = (kernel.astype(np.float64) + delta.reshape(kernel.shape)).astype(kernel.dtype)
  return traverse_util.unflatten_dict(flat)


def count(params) -> int:
  """Number of adapter parameters."""
  return sum(int(np.size(x)) for x in jax.tree.leaves(params.get(KEY, {})))
