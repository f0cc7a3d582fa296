"""Evaluators: zero-shot classification, image-text retrieval, few-shot and linear probes, a
trained classifier's accuracy, the LocCa decoder's captioning and referring expressions, a dense
probe of the image tokens, and visual question answering with objectives.vlm's language model.

`config.evals.<name> = dict(type=..., every_steps=..., **options)`; `type` names a class in
EVALUATORS, built as `cls(embedder, **options)`: each class's constructor signature (typed,
with defaults) is the list of options it accepts. Every evaluator derives from base.Evaluator.
"""

import inspect

from big_vision_lite.errors import ConfigError
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.captioning import Captioning
from big_vision_lite.evaluators.classify import Classify
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.evaluators.fewshot import FewShot
from big_vision_lite.evaluators.linear_probe import LinearProbe
from big_vision_lite.evaluators.localisation import DenseProbe, Referring
from big_vision_lite.evaluators.retrieval import Retrieval
from big_vision_lite.evaluators.vqa import VQA
from big_vision_lite.evaluators.zeroshot import ZeroShot

EVALUATORS: dict[str, type[Evaluator]] = {
    cls.kind: cls for cls in (ZeroShot, Retrieval, FewShot, LinearProbe, Classify, Captioning,
                              Referring, DenseProbe, VQA)}


def make_evaluators(evals_config, embedder: Embedder | None,
                    defaults: dict) -> dict[str, tuple[Evaluator, int | None]]:
  """{name: (evaluator, every_steps or None)} from config.evals as the schema resolved it (which
  checked each type and its options against the constructor); `defaults` fill unset options that
  the evaluator takes (image_size, max_len, tokenizer)."""
  out = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    cls = EVALUATORS[cfg.pop("type")]
    every = cfg.pop("every_steps", None)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in defaults.items() if k in accepted}
    kwargs.update(cfg)
    try:  # Loads (or checks) the dataset: a typo stops the run before anything is written.
      out[name] = (cls(embedder, **kwargs), every)
    except (ValueError, FileNotFoundError) as e:
      raise ConfigError(f"config.evals.{name}: {e}") from e
  return out
