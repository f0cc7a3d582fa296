"""Evaluators: zero-shot classification, image-text retrieval, few-shot linear probes.

`config.evals.<name> = dict(type=..., every_steps=..., **kwargs)`; `type` names a class in
EVALUATORS, built as `cls(embedder, **kwargs)`. Each evaluator has `embed(params) -> {name:
array}` (every process gets the whole set's embeddings, in dataset order), `metrics(embeddings)
-> {metric: value}`, `run(params)` (both), and `benchmark(metrics)` (CLIP_benchmark's names).
"""

import difflib
import inspect

from big_vision_lite.config import ConfigError
from big_vision_lite.evaluators.fewshot import FewShot
from big_vision_lite.evaluators.retrieval import Retrieval
from big_vision_lite.evaluators.zeroshot import ZeroShot

EVALUATORS = {"zeroshot": ZeroShot, "retrieval": Retrieval, "fewshot": FewShot}


def make(evals_config, embedder, defaults: dict) -> dict:
  """{name: (evaluator, every_steps or None)} from config.evals; `defaults` fill unset kwargs
  that the evaluator takes (image_size, max_len, tokenizer)."""
  out = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in EVALUATORS:
      raise ConfigError(f"config.evals.{name}.type={kind!r} is not one of {sorted(EVALUATORS)}")
    every = cfg.pop("every_steps", None)
    cls = EVALUATORS[kind]
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name not in ("self", "embedder")]
    accepted = [p.name for p in params]
    for key in cfg:
      if key not in accepted:
        close = difflib.get_close_matches(key, accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config.evals.{name}: {kind} takes no {key!r}{hint}; it takes "
                          f"{accepted}")
    kwargs = {k: v for k, v in defaults.items() if k in accepted}
    kwargs.update(cfg)
    missing = [p.name for p in params
               if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
      raise ConfigError(f"config.evals.{name}: {kind} needs {missing}")
    out[name] = (cls(embedder, **kwargs), every)
  return out
