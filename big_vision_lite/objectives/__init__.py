"""Training terms: what the update step optimises is a weighted sum of them.

`config.objectives` maps a term's name (a key of OBJECTIVES) to its settings: every term has a
`weight` and a `start` (the fraction of training at which it begins; before it, its weight is 0)
and may take options of its own. The update step runs the model once (the towers the terms
read), gives each term the batch and the model's outputs, and sums `weight * loss`; nothing else
in the trainer, the model or the loader depends on which terms exist.

A term (a `Term` subclass in its own module) declares
- `batch_keys`: the batch entries it reads ({key: BatchKey}); the trainer checks the input
  against them before any step and keeps only the keys some term reads;
- `towers`: which of the two towers it needs ('image', 'text');
- `model_options`: options the two-tower model is built with (classify: its head);
- `init(rng, outputs)`: the parameters it adds beside the towers, under top-level names of its
  own (e.g. `dec/...`), so that freezing, lr multipliers, sharding rules and checkpoints treat
  them like the towers';
- `prepare(batch, rng)`: per-example random draws over the whole global batch (made once per
  step from the step number, so resuming, accumulating or sharding does not change them);
- `loss(params, batch, outputs) -> (loss, metrics)`.

A term that reads the EMA teacher (objectives/teacher.py) also declares
- `teacher`: the top-level parameter names it reads from the teacher (e.g. ('img', 'silc')):
  the teacher holds a copy of the union of them over the terms;
- `buffers()`: arrays it keeps beside the teacher, never trained (the centre of the teacher's
  outputs), in `state['buffers'][name]`;
- `teach(teacher, buffers, batch) -> (entries, buffers)`: the teacher's per-example outputs
  (added to the batch, so accumulation slices them like the batch) and the buffers after this
  step. The update step computes them outside the differentiated loss: no gradient reaches the
  teacher. Entries named `teacher_*` pass from one reader's `teach` to the next (the teacher
  tower's outputs on the global view, computed once a step) and not to the losses.

A term that starts after step 0 is not computed before (its loss is logged as 0); when it
starts, its own parameters are initialised afresh (as at step 0, from config.seed; their
optimiser moments are still zero since they had no gradient) and its buffers reset; the teacher
is copied from the student when the terms that read it start.

A `coupled` term couples the examples of a batch (the contrastive loss): it splits into
`features` (per-example arrays and batch-wide scalars) and `loss_of_features`, so that gradient
accumulation can take its loss over the whole batch. Every other term must be a mean over
examples: accumulation then averages it over micro-batches, exactly.
"""

import dataclasses
from typing import Any

import jax
import numpy as np

from big_vision_lite import schema
from big_vision_lite.schema import ConfigError


@dataclasses.dataclass(frozen=True)
class BatchKey:
  """One batch entry a term reads: its shape per example, dtype, what it is, and how to get it."""

  shape: tuple[int, ...]
  dtype: Any
  what: str
  fix: str


COMMON_OPTIONS = dict(
    weight=schema.Float(1.0, "the term's weight in the summed loss", min=0),
    start=schema.Float(0.0, "fraction of training at which the term starts (weight 0 before), "
                       "in [0, 1)", min=0),
)


class Term:
  """A training term (see the module docstring). Subclasses set `name`, `towers`, `OPTIONS`
  and implement `loss` (or, when `coupled`, `features` and `loss_of_features`)."""

  name: str = ""
  towers: tuple[str, ...] = ("image",)
  coupled: bool = False
  OPTIONS: dict[str, schema.Spec] = {}  # The term's own options, beside weight and start.
  plain = True  # XLA's FLOP count of a step with this term is the model's (no loop inside).
  teacher: tuple[str, ...] = ()  # Parameters (top-level names) read from the EMA teacher.
  params: tuple[str, ...] = ()  # The top-level names of the parameters `init` adds.

  def __init__(self, config, settings, mesh=None):
    del mesh
    self.config = config
    self.settings = settings
    self.weight = float(settings["weight"])
    self.start = float(settings["start"])
    self.batch_keys: dict[str, BatchKey] = {}

  @classmethod
  def model_options(cls, config, settings) -> dict[str, Any]:
    """Options of the two-tower model this term needs (TwoTowers keyword arguments)."""
    del config, settings
    return {}

  def init(self, rng: jax.Array, outputs) -> dict:
    """The parameters this term adds ({top-level name: tree}); `outputs` are the model's outputs
    (shapes) on one example."""
    del rng, outputs
    return {}

  def prepare(self, batch: dict, rng: jax.Array) -> dict:
    """Extra batch entries drawn once per step over the global batch (default: none)."""
    del batch, rng
    return {}

  def buffers(self) -> dict:
    """(terms reading the teacher) arrays kept beside the teacher, never trained."""
    return {}

  def teach(self, teacher: dict, buffers: dict, batch: dict) -> tuple[dict, dict]:
    """(terms reading the teacher) (the teacher's per-example outputs, as batch entries; the
    buffers after this step)."""
    raise NotImplementedError

  def loss(self, params, batch: dict, outputs: dict) -> tuple[jax.Array, dict]:
    """(scalar loss, {metric: scalar}) for the batch; `outputs` are the model's outputs."""
    return self.loss_of_features(self.features(params, batch, outputs))

  def features(self, params, batch: dict, outputs: dict) -> dict:
    """(coupled terms) per-example arrays [b, ...] and batch-wide scalars of a (micro-)batch."""
    raise NotImplementedError

  def loss_of_features(self, features: dict) -> tuple[jax.Array, dict]:
    """(coupled terms) the loss and metrics of the whole batch's features."""
    raise NotImplementedError

  def check_tokenizer(self, vocab: int, spec: str) -> None:
    """Fails (ConfigError) when the term cannot hold every id of the tokenizer (`vocab` ids,
    named by `spec`)."""
    del vocab, spec

  def evaluator_defaults(self) -> dict[str, Any]:
    """Options this term gives the evaluators that take them (LocCa: its `decoder`)."""
    return {}

  def plain_settings(self) -> dict[str, Any]:
    """Settings that make the term `plain` for counting FLOPs (the same computation)."""
    return {}

  def init_from(self, config, loaded: dict, fresh: dict, mesh=None) -> dict:
    """The parameters a run initialised from `config.model_init` starts with (default:
    `loaded`, the checkpoint fitted to the model, with this term's own parameters)."""
    del config, fresh, mesh
    return loaded


def _terms():
  # Imported here: the term modules import models and losses, which the schema must not need.
  from big_vision_lite.objectives import (  # pylint: disable=import-outside-toplevel
      classify, contrastive, locca, silc, tips, vlm)
  return {"contrastive": contrastive.Contrastive, "classify": classify.Classify,
          "locca": locca.LocCa, "silc": silc.Silc, "tips": tips.Tips, "vlm": vlm.VLM}


def image_tokens(outputs: dict, term: str) -> jax.Array:
  """The image tower's un-pooled tokens [B, N, D] from the model's outputs, for the decoders
  that read them (`term` names the reader in the error)."""
  img = outputs.get("img") or {}
  if "encoded" not in img:
    raise ConfigError(f"objectives.{term} reads the image tower's un-pooled tokens: use a ViT "
                      "image tower (model.image.type='vit')")
  return img["encoded"]


def objectives() -> dict[str, type[Term]]:
  """{name: Term class}: the terms `config.objectives` may name."""
  return _terms()


def schema_options() -> dict[str, schema.Section]:
  """{name: the Section of its settings} for schema.py."""
  return {name: schema.Section({**COMMON_OPTIONS, **cls.OPTIONS})
          for name, cls in objectives().items()}


def check(config) -> None:
  """What the schema cannot check alone: at least one term, `start` in [0, 1)."""
  if not config.objectives:
    raise ConfigError("config.objectives is empty: name at least one term, e.g. "
                      "{'contrastive': {'weight': 1.0}}")
  for name, settings in config.objectives.items():
    if not 0 <= settings["start"] < 1:
      raise ConfigError(f"config.objectives.{name}.start={settings['start']} must be in [0, 1) "
                        "(the fraction of training at which the term starts)")


def make_terms(config, mesh=None) -> list[Term]:
  """The config's terms, in name order (the order of their random streams)."""
  check(config)
  known = objectives()
  terms = []
  for name in sorted(config.objectives):
    if name not in known:
      raise ConfigError(f"unknown objective {name!r} in config.objectives; known: {sorted(known)}")
    terms.append(known[name](config, config.objectives[name], mesh))
  from big_vision_lite.objectives import teacher  # pylint: disable=import-outside-toplevel
  teacher.check(config, terms)
  return terms


def param_names() -> set[str]:
  """The top-level parameter names that any known term adds (`Term.params`): a checkpoint's
  entries under them belong to its training terms, not to the towers."""
  return {k for cls in objectives().values() for k in cls.params}


def teacher_keys(terms: list[Term]) -> list[str]:
  """The parameters (top-level names) the EMA teacher copies: those its readers read."""
  return sorted({k for t in terms for k in t.teacher})


def model_options(config) -> dict[str, Any]:
  """The two-tower model's options that the config's terms need."""
  out: dict[str, Any] = {}
  known = objectives()
  for name in sorted(config.objectives):
    if name in known:
      out.update(known[name].model_options(config, config.objectives[name]))
  return out


def uses_text(config) -> bool:
  """Whether any term reads the text tower."""
  return any("text" in t.towers for t in make_terms(config))


def batch_keys(terms: list[Term]) -> dict[str, tuple[BatchKey, str]]:
  """{key: (BatchKey, the first term that reads it)} over `terms`, always with the image; two
  terms reading one key must agree on it."""
  out: dict[str, tuple[BatchKey, str]] = {}
  for term in terms:
    for key, spec in term.batch_keys.items():
      if key in out and (out[key][0].shape, np.dtype(out[key][0].dtype)) != (
          spec.shape, np.dtype(spec.dtype)):
        raise ConfigError(f"objectives {out[key][1]!r} and {term.name!r} read batch key {key!r} "
                          f"with different shapes {out[key][0].shape} vs {spec.shape}")
      out.setdefault(key, (spec, term.name))
  return out
