"""Evaluators: zero-shot classification, image-text retrieval, few-shot and linear probes, a
trained classifier's accuracy, and the LocCa decoder's captioning and referring expressions and
a dense probe of the image tokens.

`config.evals.<name> = dict(type=..., every_steps=..., **options)`; `type` names a class in
EVALUATORS, built as `cls(embedder, **options)`: each class's constructor signature (typed,
with defaults) is the list of options it accepts. Every evaluator derives from base.Evaluator.
"""

import difflib
import inspect

from big_vision_lite.config import ConfigError
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.captioning import Captioning
from big_vision_lite.evaluators.classify import Classify
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.evaluators.fewshot import FewShot
from big_vision_lite.evaluators.linear_probe import LinearProbe
from big_vision_lite.evaluators.localisation import DenseProbe, Referring
from big_vision_lite.evaluators.retrieval import Retrieval
from big_vision_lite.evaluators.zeroshot import ZeroShot

EVALUATORS: dict[str, type[Evaluator]] = {
    cls.kind: cls for cls in (ZeroShot, Retrieval, FewShot, LinearProbe, Classify, Captioning,
                              Referring, DenseProbe)}


def make_evaluators(evals_config, embedder: Embedder | None,
                    defaults: dict) -> dict[str, tuple[Evaluator, int | None]]:
  """{name: (evaluator, every_steps or None)} from config.evals; `defaults` fill unset options
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
