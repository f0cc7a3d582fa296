"""The config schema: every key of every section, with its default, type, allowed values and help.

This is the single source of truth for configs. `config.resolve` checks a config file, its
`--config.a.b=value` overrides and whole-section overrides against it and fills the defaults;
docs/training.md's config table is generated from it
(python -m big_vision_lite.tools.readme_tables).

A schema is built from a few node types: leaves (`Int`, `Float`, `Str`, `Bool`, `Seq`, `Rules`,
`Union`), `Section` (a fixed set of keys), `Variant` (a section whose keys depend on one of its
values, e.g. `model.image.type`), `OneOrList` (one section or a list of them: data mixtures) and
`Map` (named entries: `evals`). `check(value, path)` returns the checked value with defaults
filled, or raises ConfigError naming the key and the fix.

Sets of allowed values (loss names, activations, ...) are defined by the modules that implement
them; the schema reads them from there (`defined_in`) when they are first needed.
"""

import ast
import dataclasses
import difflib
import importlib
import inspect
import os
import re
from typing import Any, Callable

from big_vision_lite.errors import ConfigError

_REQUIRED = object()  # Default of a key that must be given.


def _is_mapping(value) -> bool:
  return hasattr(value, "keys") and hasattr(value, "__getitem__")


def did_you_mean(value: Any, known, prefix: str = "") -> str:
  """' (did you mean 'prefix+closest'?)' for the known value closest to `value`, else ''."""
  close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1, cutoff=0.6)
  return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def _unknown(path: str, key: str, known, what: str = "config key") -> ConfigError:
  full = f"{path}.{key}" if path else key
  hint = did_you_mean(key, known, f"{path}." if path else "")
  return ConfigError(f"unknown {what} {full!r}{hint}")


def defined_in(module: str, name: str) -> Callable[[], tuple]:
  """A function returning the values `big_vision_lite.<module>.<name>` defines (a dict's keys).

  A tuple literal or a dict with literal keys is read from the module's source rather than by
  importing it, so checking a config imports no model code (JAX, Flax); any other definition
  imports the module."""
  def read() -> tuple:
    path = os.path.join(os.path.dirname(__file__), *module.split(".")) + ".py"
    with open(path) as f:
      body = ast.parse(f.read()).body
    for node in body:
      target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                else node.target if isinstance(node, ast.AnnAssign) else None)
      if isinstance(target, ast.Name) and target.id == name:
        try:
          if isinstance(node.value, ast.Dict):
            return tuple(ast.literal_eval(k) for k in node.value.keys)
          return tuple(ast.literal_eval(node.value))
        except ValueError:
          break
    return tuple(getattr(importlib.import_module(f"big_vision_lite.{module}"), name))
  return read


class Spec:
  """A schema node."""

  help: str = ""

  def check(self, value: Any, path: str) -> Any:
    raise NotImplementedError

  def default(self) -> Any:
    raise NotImplementedError

  def type_text(self) -> str:
    raise NotImplementedError

  def child(self, key: str, node, path: str) -> "Spec":
    """The spec of `key` inside this node (whose current value is `node`)."""
    del node
    raise ConfigError(f"config.{path} ({self.type_text()}) has no key {key!r}")


@dataclasses.dataclass
class Leaf(Spec):
  """A value of one of `types`, optionally None, restricted to `choices` (a tuple, or a function
  that returns it: see `defined_in`) or a minimum."""

  types: tuple[type, ...]
  value: Any = _REQUIRED
  help: str = ""
  nullable: bool = False
  choices: tuple | Callable[[], tuple] | None = None
  min: float | None = None
  positive: bool = False

  def default(self) -> Any:
    return self.value

  def allowed(self) -> tuple | None:
    """The allowed values (None: any)."""
    if callable(self.choices):
      self.choices = self.choices()
    return self.choices

  def type_text(self) -> str:
    if self.allowed():
      text = " \\| ".join(repr(c) for c in self.allowed())
    else:
      text = "/".join(t.__name__ for t in self.types)
    return text + (" or None" if self.nullable else "")

  def check(self, value: Any, path: str) -> Any:
    if self.types == (object,):  # Open values (evaluator options): JSON's lists are tuples.
      return _tuples(value)
    if value is None:
      if self.nullable:
        return None
      raise ConfigError(f"config.{path} must be set ({self.type_text()}), got None")
    if float in self.types and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    numeric = int in self.types or float in self.types
    if (isinstance(value, bool) and numeric and bool not in self.types
        or not isinstance(value, self.types)):
      raise ConfigError(f"config.{path} expects {self.type_text()}, got {value!r}")
    if self.allowed() is not None and value not in self.allowed():
      raise ConfigError(f"config.{path}={value!r} is not one of {list(self.allowed())}"
                        + did_you_mean(value, self.allowed()))
    if self.positive and not value > 0:
      raise ConfigError(f"config.{path} must be > 0, got {value!r}")
    if self.min is not None and value < self.min:
      raise ConfigError(f"config.{path} must be >= {self.min}, got {value!r}")
    return value


def _tuples(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def Int(value=_REQUIRED, help="", **kw) -> Leaf:  # pylint: disable=invalid-name,redefined-builtin
  return Leaf((int,), value, help, **kw)


def Float(value=_REQUIRED, help="", **kw) -> Leaf:  # pylint: disable=invalid-name,redefined-builtin
  return Leaf((float,), value, help, **kw)


def Str(value=_REQUIRED, help="", **kw) -> Leaf:  # pylint: disable=invalid-name,redefined-builtin
  return Leaf((str,), value, help, **kw)


def Bool(value=_REQUIRED, help="") -> Leaf:  # pylint: disable=invalid-name,redefined-builtin
  return Leaf((bool,), value, help)


def Anything(value=None, help="") -> Leaf:  # pylint: disable=invalid-name,redefined-builtin
  return Leaf((object,), value, help, nullable=True)


@dataclasses.dataclass
class Seq(Spec):
  """A tuple (lists are accepted) of items, each checked by `item` (a Spec, or a tuple of Specs
  for fixed-length items such as `(name, size)` pairs). The default `value` may be a function
  that returns it (see `defined_in`)."""

  item: Any
  value: Any = ()
  help: str = ""
  nullable: bool = False
  min_len: int = 0

  def default(self) -> Any:
    if callable(self.value):
      self.value = self.value()
    return self.value

  def type_text(self) -> str:
    if isinstance(self.item, tuple):
      inner = "(" + ", ".join(s.type_text() for s in self.item) + ")"
    else:
      inner = self.item.type_text()
    return f"tuple of {inner}" + (" or None" if self.nullable else "")

  def check(self, value: Any, path: str) -> Any:
    if value is None and self.nullable:
      return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
      raise ConfigError(f"config.{path} expects a {self.type_text()}, got {value!r}")
    if len(value) < self.min_len:
      raise ConfigError(f"config.{path} needs at least {self.min_len} item(s), got {value!r}")
    out = []
    for i, item in enumerate(value):
      if isinstance(self.item, tuple):
        if not isinstance(item, (tuple, list)) or len(item) != len(self.item):
          raise ConfigError(f"config.{path}[{i}] expects {self.type_text()[9:]}, got {item!r}")
        out.append(tuple(s.check(v, f"{path}[{i}]") for s, v in zip(self.item, item)))
      else:
        out.append(self.item.check(item, f"{path}[{i}]"))
    return tuple(out)


def Rules(value_spec: Spec, value=(), help="") -> Seq:  # pylint: disable=invalid-name,redefined-builtin
  """(regex, value) pairs over parameter names; the regexes must compile."""
  return Seq((_Regex(), value_spec), value, help)


class _Regex(Leaf):
  def __init__(self):
    super().__init__((str,), help="regex")

  def type_text(self) -> str:
    return "regex"

  def check(self, value: Any, path: str) -> Any:
    value = super().check(value, path)
    try:
      re.compile(value)
    except re.error as e:
      raise ConfigError(f"config.{path}: bad regex {value!r}: {e}") from None
    return value


@dataclasses.dataclass
class Union(Spec):
  """The first alternative that accepts the value."""

  alternatives: tuple[Spec, ...]
  value: Any = _REQUIRED
  help: str = ""
  nullable: bool = False

  def default(self) -> Any:
    return self.value

  def type_text(self) -> str:
    return " or ".join(a.type_text() for a in self.alternatives) + (
        " or None" if self.nullable else "")

  def check(self, value: Any, path: str) -> Any:
    if value is None and self.nullable:
      return None
    for alt in self.alternatives:
      try:
        return alt.check(value, path)
      except ConfigError:
        pass
    raise ConfigError(f"config.{path} expects {self.type_text()}, got {value!r}")


@dataclasses.dataclass
class Section(Spec):
  """A mapping with a fixed set of keys. Missing keys take their defaults (`fill=False`: left
  unset, for sections whose defaults are applied elsewhere)."""

  fields: dict[str, Spec]
  help: str = ""
  fill: bool = True

  def default(self) -> Any:
    return self.check({}, "")

  def type_text(self) -> str:
    return "dict"

  def child(self, key: str, node, path: str) -> Spec:
    del node
    if key not in self.fields:
      raise _unknown(path, key, self.fields)
    return self.fields[key]

  def check(self, value: Any, path: str) -> Any:
    if not _is_mapping(value):
      raise ConfigError(f"config.{path} expects a dict with keys {sorted(self.fields)}, "
                        f"got {value!r}")
    for key in value.keys():
      if key not in self.fields:
        raise _unknown(path, key, self.fields)
    out = {}
    for key, spec in self.fields.items():
      where = f"{path}.{key}" if path else key
      if key in value:
        out[key] = spec.check(value[key], where)
      elif spec.default() is _REQUIRED:
        raise ConfigError(f"config.{where} is required ({spec.help or spec.type_text()})")
      elif not self.fill:
        continue
      else:
        out[key] = spec.check(spec.default(), where)
    return out


@dataclasses.dataclass
class Optional(Spec):
  """None (off, the default) or a section (on), e.g. `lora`."""

  section: Spec
  help: str = ""

  def default(self) -> Any:
    return None

  def type_text(self) -> str:
    return "None or dict"

  def child(self, key: str, node, path: str) -> Spec:
    return self.section.child(key, node, path)

  def check(self, value: Any, path: str) -> Any:
    return None if value is None else self.section.check(value, path)


@dataclasses.dataclass
class Variant(Spec):
  """A section whose keys depend on the value of its `key` (e.g. `type`): `options[value]`.
  `fallback`, if given, is the section for any other value (e.g. any tfds dataset name)."""

  key: str
  options: dict[str, Section] | Callable[[], dict[str, Section]]
  value: str | None = None  # The option when `key` is absent; None: `key` is required.
  help: str = ""
  fallback: Section | None = None

  def _options(self) -> dict[str, Section]:
    if callable(self.options):
      self.options = self.options()
    return self.options

  def default(self) -> Any:
    return self.check({}, "") if self.value is not None else _REQUIRED

  def type_text(self) -> str:
    return "dict"

  def _choose(self, value, path: str) -> tuple[str, Section]:
    options = self._options()
    name = value.get(self.key, self.value) if _is_mapping(value) else self.value
    where = f"{path}.{self.key}" if path else self.key
    if name is None:
      raise ConfigError(f"config.{where} is required: one of {sorted(options)}"
                        + (" or another name" if self.fallback else ""))
    if name in options:
      return name, options[name]
    if self.fallback is not None and isinstance(name, str):
      return name, self.fallback
    raise ConfigError(f"config.{where}={name!r} is not one of {sorted(options)}"
                      + did_you_mean(name, options))

  def child_fields(self, node, path: str) -> dict[str, Spec]:
    """The keys of the option that `node` selects."""
    return self._choose(node, path)[1].fields

  def child(self, key: str, node, path: str) -> Spec:
    name, section = self._choose(node, path)
    if key not in section.fields:
      err = _unknown(path, key, section.fields)
      raise ConfigError(f"{err} ({self.key}={name!r} takes {sorted(section.fields)})")
    return section.fields[key]

  def check(self, value: Any, path: str) -> Any:
    if not _is_mapping(value):
      raise ConfigError(f"config.{path} expects a dict, got {value!r}")
    name, section = self._choose(value, path)
    try:
      out = section.check(value, path)
    except ConfigError as e:
      if str(e).startswith("unknown config key"):
        raise ConfigError(f"{e} ({self.key}={name!r} takes {sorted(section.fields)})") from None
      raise
    out[self.key] = name
    return out


@dataclasses.dataclass
class OneOrList(Spec):
  """One entry or a non-empty list of entries (e.g. a data source or a mixture of them)."""

  item: Spec
  value: Any = _REQUIRED
  help: str = ""

  def default(self) -> Any:
    return self.value

  def type_text(self) -> str:
    return "dict or list of dicts"

  def child(self, key: str, node, path: str) -> Spec:
    if isinstance(node, (list, tuple)):
      raise ConfigError(f"config.{path} is a list: replace it whole (--config.{path}=[...])")
    return self.item.child(key, node, path)

  def check(self, value: Any, path: str) -> Any:
    if isinstance(value, (list, tuple)):
      if not value:
        raise ConfigError(f"config.{path} is an empty list")
      return tuple(self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value))
    return self.item.check(value, path)


@dataclasses.dataclass
class Map(Spec):
  """Named entries, each checked by `item` (e.g. `evals.<name>`)."""

  item: Spec
  value: Any = dataclasses.field(default_factory=dict)
  help: str = ""

  def default(self) -> Any:
    return dict(self.value)

  def type_text(self) -> str:
    return "dict of name -> dict"

  def child(self, key: str, node, path: str) -> Spec:
    del node  # A new entry may be added by name (`--config.evals.mine="{'type': ...}"`).
    return self.item

  def check(self, value: Any, path: str) -> Any:
    if not _is_mapping(value):
      raise ConfigError(f"config.{path} expects a dict of name -> dict, got {value!r}")
    return {k: self.item.check(value[k], f"{path}.{k}") for k in value.keys()}


@dataclasses.dataclass
class Named(Spec):
  """Entries whose names are fixed options, each with its own section (e.g. `objectives`):
  `options()` -> {name: Section}; an unknown name is an error listing the known ones."""

  options: Callable[[], dict[str, Spec]]
  value: Any = dataclasses.field(default_factory=dict)
  help: str = ""
  what: str = "entry"

  def default(self) -> Any:
    return self.check(dict(self.value), "")

  def type_text(self) -> str:
    return "dict of name -> dict"

  def child(self, key: str, node, path: str) -> Spec:
    del node
    options = self.options()
    if key not in options:
      raise _unknown(path, key, options, self.what)
    return options[key]

  def check(self, value: Any, path: str) -> Any:
    if not _is_mapping(value):
      raise ConfigError(f"config.{path} expects a dict of name -> dict, got {value!r}")
    options = self.options()
    out = {}
    for key in value.keys():
      if key not in options:
        err = _unknown(path, key, options, self.what)
        raise ConfigError(f"{err}; known: {sorted(options)}")
      out[key] = options[key].check(value[key] if value[key] is not None else {},
                                    f"{path}.{key}")
    return out


def signature_section(cls, skip: tuple[str, ...], extra: dict[str, Spec]) -> Section:
  """A Section whose keys are `cls`'s constructor arguments (the constructor is the source of
  truth of their defaults), plus `extra`; defaults are left to the constructor."""
  fields = dict(extra)
  for p in inspect.signature(cls.__init__).parameters.values():
    if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
      continue
    fields[p.name] = Leaf((object,), _REQUIRED if p.default is p.empty else p.default,
                          nullable=True)
  return Section(fields, fill=False)


# --------------------------------------------------------------------------------------------
# The schema.

_CLIP_OPTIONS = dict(
    act=Str("gelu_tanh", "MLP activation: tanh-approximated GELU (big_vision), exact GELU, or "
            "CLIP's QuickGELU", choices=defined_in("models.layers", "ACTIVATIONS")),
    ln_eps=Float(1e-6, "LayerNorm epsilon (1e-5 for OpenAI/open_clip weights)", positive=True),
    head_bias=Bool(True, "the projection head has a bias (False for OpenAI/open_clip weights)"),
)
_TOWER_COMMON = dict(
    width=Int(None, "hidden size (overrides the variant)", nullable=True, positive=True),
    depth=Int(None, "number of Transformer blocks (overrides the variant)", nullable=True,
              positive=True),
    mlp_dim=Int(None, "MLP hidden size (overrides the variant)", nullable=True, positive=True),
    num_heads=Int(None, "attention heads (overrides the variant)", nullable=True, positive=True),
    head_zeroinit=Bool(False, "zero-initialise the projection head"),
    scan=Bool(False, "scan over layers (one compiled block; parameters stacked as "
              "`encoderblock/...` [depth, ...])"),
    remat_policy=Str("none", "rematerialise each block in the backward pass",
                     choices=defined_in("models.layers", "REMAT_POLICIES")),
)

VIT = Section(dict(
    type=Str("vit", "image tower type", choices=("vit",)),
    variant=Str("B/16", "`mu`, `Ti`, `S`, `M`, `B`, `L`, `So400m`, `H`, `g`, `G`, `e`, with "
                "`/patch`, e.g. `B/16`", nullable=True),
    patch_size=Seq(Int(), None, "patch size (h, w) (overrides the variant's `/patch`)",
                   nullable=True),
    image_size=Int(224, "input resolution (pixels, square): the one place it is set", positive=True),
    posemb=Str("learn", "position embedding", choices=defined_in("models.vit", "POSEMBS")),
    pool_type=Str("map", "pooling: attention probe, mean, or class token",
                  choices=defined_in("models.vit", "POOL_TYPES")),
    ln_pre=Bool(False, "a LayerNorm before the encoder (OpenAI CLIP)"),
    patch_bias=Bool(True, "the patch embedding has a bias (False for OpenAI CLIP)"),
    posemb_cls=Bool(False, "the position embedding also covers the class token (OpenAI CLIP; "
                    "needs pool_type='tok')"),
    naflex=Bool(False, "NaFlex (SigLIP 2): takes patches of images at their own aspect ratio "
                "(the `naflex` op), Dense patch embedding, position grid resized per image; "
                "pool_type `map` or `gap`; image_size unused (docs/naflex.md)"),
    posemb_grid=Int(16, "NaFlex: side G of the learned G x G position-embedding grid",
                    positive=True),
    **_CLIP_OPTIONS,
    **_TOWER_COMMON,
), help="ViT image tower")

RESNET = Section(dict(
    type=Str("resnet", "image tower type", choices=("resnet",)),
    variant=Str("50", "CLIP's ResNet: `50`, `101`, `50x4`, `50x16`, `50x64`", nullable=True),
    layers=Seq(Int(positive=True), None, "blocks per stage (overrides the variant)",
               nullable=True),
    width=Int(None, "stem width (overrides the variant)", nullable=True, positive=True),
    num_heads=Int(None, "attention-pooling heads (overrides the variant)", nullable=True,
                  positive=True),
    image_size=Int(224, "input resolution (pixels, square): the one place it is set",
                   positive=True),
    head_zeroinit=Bool(False, "zero-initialise the projection"),
), help="CLIP's modified ResNet image tower")

TEXT = Section(dict(
    variant=Str("B", "Transformer size: `mu`, `Ti`, `S`, `M`, `B`, `L`, `So400m`, ...",
                nullable=True),
    vocab_size=Int(32_000, "token vocabulary size (at least the tokenizer's)", positive=True),
    max_len=Int(64, "tokens per text (padded / truncated): the one place it is set",
                positive=True),
    pool_type=Str("last", "pooling over tokens (`argmax`: at the largest token id, CLIP's end "
                  "of text)", choices=defined_in("models.text", "POOL_TYPES")),
    causal=Bool(False, "causal attention mask (OpenAI CLIP)"),
    **_CLIP_OPTIONS,
    **_TOWER_COMMON,
), help="text Transformer tower")

MODEL = Section(dict(
    image=Variant("type", {"vit": VIT, "resnet": RESNET}, "vit",
                  "image tower: `vit` or `resnet`"),
    text=TEXT,
    out_dim=Union((Int(positive=True), Seq(Int(positive=True, nullable=True))), None,
                  "size of the projection heads: int, (image, text) with None for a tower "
                  "without one, or None for none", nullable=True),
    temperature_init=Float(10.0, "t = exp(t') starts here; t' is learnt", positive=True),
    bias_init=Float(-10.0, "b starts here (~ -log(batch size)); None: no bias", nullable=True),
    dtype_mm=Str("float32", "matmul dtype (parameters and losses stay float32)",
                 choices=defined_in("models.two_towers", "DTYPES")),
), help="the two-tower model")


def _source(name_spec: Leaf, **fields) -> Section:
  return Section(dict(name=name_spec, weight=Float(1.0, "mixture weight", positive=True),
                      **fields))


SOURCE = Variant("name", {
    "shapes": _source(
        Str("shapes", "the embedded shapes dataset"),
        seed=Int(0, "which shapes universe (examples are a function of seed, split, index)"),
        image_size=Int(None, "drawn resolution; None: model.image.image_size", nullable=True),
        aspect=Float(1.0, "non-square canvases: width / height drawn from 1:aspect to aspect:1 "
                     "(1: square), squashed to image_size or kept by NaFlex", min=1),
        split=Str("train", "shapes split (grain pipelines)",
                  choices=defined_in("data.shapes", "SPLITS")),
        size=Int(1 << 20, "examples in the finite source (grain pipelines)", positive=True),
        task=Str(None, "one-object images labelled with this attribute, for the classify "
                 "objective (`shapes_size`, `shapes_position`, `shapes_shape`, `shapes_color`, "
                 "`shapes_combo_heldout`)", nullable=True,
                 choices=defined_in("data.shapes", "TASKS")),
        conversation=Str(None, "give each image a conversation (vlm_text, vlm_mask) for "
                         "objectives.vlm: `instruct` (questions and answers), `caption`, or "
                         "`text` (the LM's text-only pretraining)", nullable=True,
                         choices=defined_in("data.instruct", "CONVERSATIONS")),
        turns=Int(2, "questions per conversation (conversation='instruct')", positive=True),
        vlm_len=Int(32, "tokens per conversation (objectives.vlm.text_len)", positive=True)),
    "tar": _source(
        Str("tar", "image-text tar shards"),
        pattern=Str(help="a directory, glob, brace range or comma list of .tar shards, local or "
                    "remote (gs://, s3://, any fsspec URL)"),
        index_dir=Str(None, "where shard indexes go when they cannot be written beside the "
                      "shards (remote or read-only); None: $BVL_INDEX_DIR or "
                      "~/.cache/big_vision_lite/shard_index", nullable=True)),
}, None, "a data source: `shapes`, `tar`, or a tfds dataset name", fallback=_source(
    Str(help="tfds dataset name"),
    split=Str("train", "tfds split"),
    data_dir=Str(None, "tfds data_dir (default: tfds's own)", nullable=True),
    image_key=Str("image", "'/'-path of the image feature"),
    caption_key=Str("captions/text", "'/'-path of the caption feature (None for a "
                    "classification dataset)", nullable=True),
    label_key=Str("label", "'/'-path of the class label feature (the classify objective)")))

INPUT = Section(dict(
    data=OneOrList(SOURCE, {"name": "shapes"},
                   "one source or a list of them with `weight`s (a mixture)"),
    pp=Str(None, "preprocessing op string; None: the built-in shapes stream", nullable=True),
    tokenizer=Str(None, "sentencepiece .model path, `'clip'` (CLIP's BPE), a CLIP vocabulary "
                  ".txt.gz or a tokenizer.json, optionally with `:pad=ID` (big_vision's SigLIP "
                  "models pad with 1); None: the tokenizer of a Hugging Face model_init "
                  "directory, else the shipped shapes tokenizer", nullable=True),
    seq_lengths=Seq(Int(positive=True), None, "NaFlex (model.image.naflex): patches per image, "
                    "drawn per batch from this list, e.g. (128, 256, 576, 784, 1024); the op "
                    "string leaves images at their own size", nullable=True),
    seed=Int(0, "shuffling and augmentation seed (grain pipelines)"),
    num_workers=Int(0, "grain preprocessing worker processes", min=0),
    max_consecutive_skips=Int(100, "stop when this many records in a row fail preprocessing",
                              positive=True),
), help="training input")

OPTAX = Variant("name", {
    "adam": Section(dict(name=Str("adam", "Adam"), b1=Float(0.9, "Adam b1", min=0),
                         b2=Float(0.999, "Adam b2 (SigLIP: 0.95)", min=0),
                         eps=Float(1e-8, "Adam eps", positive=True))),
    "sgd": Section(dict(name=Str("sgd", "SGD"),
                        momentum=Float(0.9, "SGD momentum (0: none)", min=0))),
}, "adam", "optimiser: `adam` (b1, b2, eps) or `sgd` (momentum)")

SCHEDULE = Section(dict(
    warmup_steps=Int(None, "linear warmup length in steps (or warmup_examples)", nullable=True,
                     min=0),
    warmup_examples=Int(None, "linear warmup length in examples", nullable=True, min=0),
    decay_type=Str("cosine", "decay after warmup", choices=defined_in("optim", "DECAYS")),
    timescale=Int(10_000, "rsqrt decay timescale", positive=True),
    min_lr=Float(0.0, "learning rate at the end of cosine / linear decay", min=0),
), help="learning-rate schedule")


def _objective_options() -> dict[str, Section]:
  from big_vision_lite import objectives  # pylint: disable=import-outside-toplevel
  return objectives.schema_options()


def _eval_options() -> dict[str, Section]:
  from big_vision_lite import evaluators  # pylint: disable=import-outside-toplevel
  every = Int(None, "evaluate every N steps (None: config.eval_steps)", nullable=True,
              positive=True)
  return {name: signature_section(cls, ("embedder",), dict(
      type=Str(name, "evaluator type"), every_steps=every))
          for name, cls in evaluators.EVALUATORS.items()}


SCHEMA = Section(dict(
    seed=Int(0, "parameter initialisation seed"),
    batch_size=Int(help="global batch, split over all devices of all processes", positive=True),
    total_steps=Int(None, "run length in steps (or total_examples)", nullable=True, positive=True),
    total_examples=Int(None, "run length in examples seen", nullable=True, positive=True),
    log_training_steps=Int(100, "log train/* metrics every N steps", positive=True),
    ckpt_steps=Int(1000, "checkpoint every N steps (and at the end)", positive=True),
    keep_ckpts=Int(3, "newest checkpoints kept on disk", positive=True),
    eval_steps=Int(1000, "run config.evals every N steps (and at the end)", positive=True),
    eval_batch_size=Int(256, "global batch when embedding evaluation sets", positive=True),
    grad_accum_steps=Int(1, "micro-batches per step; the update equals the full batch's",
                         positive=True),
    max_nonfinite_steps=Int(10, "stop after this many consecutive steps with a non-finite loss "
                            "or gradient (such steps are never applied)", positive=True),
    loss=Str("sigmoid", "SigLIP sigmoid, CLIP softmax, or their distributed forms",
             choices=defined_in("losses", "NAMES")),
    lr=Float(1e-3, "peak learning rate", positive=True),
    wd=Float(1e-4, "decoupled weight decay (follows the schedule's shape, not lr)", min=0),
    grad_clip_norm=Float(1.0, "global-norm gradient clipping; None: off", nullable=True,
                         positive=True),
    lr_mults=Rules(Float(min=0), (), "(regex, multiplier) over parameter names; unmatched: 1; "
                   "0 freezes, as `frozen` does"),
    frozen=Seq(_Regex(), (), "parameter-name regexes that do not train: no gradient, no "
               "optimiser state, no weight decay (e.g. `('img/.*',)` for LiT)"),
    lora=Optional(Section(dict(
        rank=Int(8, "adapter rank r", positive=True),
        alpha=Float(16.0, "adapters are scaled by alpha / rank", positive=True),
        targets=Seq(_Regex(), defined_in("models.lora", "DEFAULT_TARGETS"), "Dense kernels "
                    "(parameter-name regexes) that get an adapter; default: attention and MLP "
                    "projections of both towers"),
        train=Seq(_Regex(), (), "base parameters that still train (e.g. `('img/head/.*',)`); "
                  "all others are frozen"),
    )), "LoRA adapters (None: off)"),
    wd_mults=Rules(Float(min=0), ((".*/kernel$", 1.0),),
                   "(regex, multiplier) over parameter names; unmatched: 0"),
    optax=OPTAX,
    schedule=SCHEDULE,
    model=MODEL,
    objectives=Named(_objective_options, {"contrastive": {}},
                     "training terms: name -> dict(weight, start, options); the update step "
                     "sums weight x loss over the terms that have started (see "
                     "big_vision_lite/objectives: `contrastive` (the loss of config.loss), "
                     "`classify`, `locca`, `silc`, `tips`, `vlm`)", what="objective"),
    teacher=Section(dict(
        momentum=Float(0.996, "EMA momentum of the teacher, fixed (as SILC; DINO's start value "
                       "0.996)", min=0),
        global_area=Seq(Float(), (0.4, 1.0), "(low, high) area fraction of the global view, "
                        "the teacher's (SILC: 0.4-1.0)"),
        local_area=Seq(Float(), (0.05, 0.4), "(low, high) area fraction of the local views, the "
                       "student's (SILC: 0.05-0.4)"),
        local_views=Int(8, "local views per image (SigLIP 2: 8)", positive=True),
        local_size=Int(None, "pixels of a local view (square, a multiple of the patch size); "
                       "None: half the image size in whole patches", nullable=True,
                       positive=True),
    ), help="the EMA teacher of `silc` and `tips` and the views it and the student see "
            "(objectives/teacher.py)"),
    model_init=Str(None, "checkpoint whose parameters initialise the model: a big_vision .npz, "
                   "an open_clip / OpenAI .safetensors (.pt/.bin with torch), a Hugging Face "
                   "transformers directory or `hf:ORG/NAME`, or a run's Orbax checkpoint; a "
                   "resumed run restores its own checkpoint instead", nullable=True),
    model_load=Section(dict(
        dont_load=Seq(_Regex(), (), "parameter-name regexes that keep their fresh "
                      "initialisation instead (e.g. `('img/head/.*',)`)"),
    ), help="how model_init loads"),
    input=INPUT,
    evals=Map(Variant("type", _eval_options), {},
              "name -> dict(type='zeroshot' | 'retrieval' | 'fewshot' | ..., every_steps, "
              "dataset, ...): see Evaluation"),
    mesh=Seq((Str(), Int()), (("data", -1),), "device mesh axes (name, size); one size may be -1",
             min_len=1),
    sharding_rules=Rules(Str(nullable=True), (),
                         "(regex, mesh axis) over parameter names; unmatched: replicated"),
))


def _rows(spec: Spec, path: str) -> list[tuple[str, str, str, str]]:
  """(key, type, default, help) rows of the markdown table."""
  if isinstance(spec, Section):
    return [row for key, s in spec.fields.items()
            for row in _rows(s, f"{path}.{key}" if path else key)]
  if isinstance(spec, Variant) and not callable(spec.options):
    options = [(repr(name), section) for name, section in spec.options.items()]
    if spec.fallback is not None:
      options.append(("other", spec.fallback))
    rows, done = [], set()
    for _, section in options:
      for key, s in section.fields.items():
        if key == spec.key or key in done:
          continue
        done.add(key)
        having = [name for name, sec in options if key in sec.fields]
        prefix = "" if len(having) == len(options) else f"({spec.key}: {', '.join(having)}) "
        rows += [(k, t, d, prefix + h) for k, t, d, h in _rows(s, f"{path}.{key}")]
    default = f"`{spec.value!r}`" if spec.value is not None else "required"
    return [(path + "." + spec.key, "str", default, spec.help)] + rows
  if isinstance(spec, Optional):
    return [(path, spec.type_text(), "`None`", spec.help)] + _rows(spec.section, path)
  if isinstance(spec, Named):
    return [(path, spec.type_text(), f"`{spec.value!r}`", spec.help)] + [
        row for name, s in spec.options().items() for row in _rows(s, f"{path}.{name}")]
  if isinstance(spec, OneOrList):
    return [(path, spec.type_text(), f"`{spec.value!r}`", spec.help)] + _rows(spec.item, path)
  default = spec.default()
  shown = "required" if default is _REQUIRED else f"`{default!r}`"
  return [(path, spec.type_text(), shown, spec.help)]


def markdown_table() -> str:
  """The config reference table (docs/training.md)."""
  lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
  seen = set()
  for key, type_text, default, help_text in _rows(SCHEMA, ""):
    if (key, help_text) in seen:
      continue
    seen.add((key, help_text))
    lines.append(f"| `{key}` | {type_text} | {default} | {help_text.replace('|', '/')} |")
  return "\n".join(lines)
