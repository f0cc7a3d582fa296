"""Evaluators: zero-shot classification, image-text retrieval.

`config.evals.<name> = dict(type=..., every_steps=..., **kwargs)`; `type` names a class in
EVALUATORS, built as `cls(embedder, **kwargs)`, with a `run(params) -> {metric: value}` method.
"""

from big_vision_lite.evaluators.retrieval import Retrieval
from big_vision_lite.evaluators.zeroshot import ZeroShot

EVALUATORS = {"zeroshot": ZeroShot, "retrieval": Retrieval}


def make(evals_config, embedder, defaults: dict) -> dict:
  """{name: (evaluator, every_steps or None)} from config.evals; `defaults` fill unset kwargs."""
  out = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in EVALUATORS:
      raise ValueError(f"config.evals.{name}.type={kind!r} is not one of {sorted(EVALUATORS)}")
    every = cfg.pop("every_steps", None)
    cls = EVALUATORS[kind]
    kwargs = {k: v for k, v in defaults.items() if k in cls.__init__.__code__.co_varnames}
    kwargs.update(cfg)
    try:
      out[name] = (cls(embedder, **kwargs), every)
    except TypeError as e:
      raise ValueError(f"config.evals.{name}: {e}") from None
  return out
