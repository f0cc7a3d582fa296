"""Configs: loading, `--config.a.b=value` overrides, checking against the schema, durations.

A config is a Python file whose `get_config(arg)` returns an `ml_collections.ConfigDict` (or a
run's `config.json`). Every key it sets, every command-line override (`--config.a.b=value`, or a
whole section `--config.schedule="{'warmup_steps': 10}"`) is checked against `schema.SCHEMA`,
and `resolve` fills the defaults, so the resolved config holds every key.
"""

import ast
import json
import os
from typing import Any

import ml_collections

from big_vision_lite import files, schema
from big_vision_lite.errors import ConfigError

__all__ = ["ConfigError", "load", "parse_arg", "override", "parse_overrides", "resolve",
           "from_args", "resolve_steps", "durations", "validate", "from_json", "to_json",
           "flatten", "differences"]


def load(spec: str) -> ml_collections.ConfigDict:
  """The config as its file builds it: `path/to/config.py[:arg]` (calls `get_config(arg)`) or a
  run's `config.json`. Not yet checked: see `resolve`. A file that takes no argument declares
  `get_config()` without parameters, and an argument given to it is an error; a file that
  fails to load is a ConfigError naming its line."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"config file {path!r} not found (pass e.g. --config configs/siglip_shapes.py)")
  if path.endswith(".json"):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  hint = (f"; set keys with --config.KEY=VALUE instead, e.g. --config.{arg.split(',')[0]}"
          if arg else "")
  return files.call_python_file(path, "get_config", arg, ConfigError, hint)


def parse_arg(arg: str | None, known: set[str], config: str) -> dict[str, str]:
  """A config file's argument 'k1=v1,k2=v2' -> {k1: v1, k2: v2}, rejecting unknown keys."""
  out = {}
  for item in (arg or "").split(","):
    if item.strip():
      key, sep, value = item.partition("=")
      if not sep:
        raise ConfigError(f"{config} argument {item!r} should be key=value")
      out[key.strip()] = value.strip()
  unknown = set(out) - known
  if unknown:
    raise ConfigError(f"unknown {config} argument(s) {sorted(unknown)}; known: {sorted(known)}")
  return out


def _plain(cfg) -> dict:
  return cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal, else the bare string (`--config.loss=softmax`)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(cfg: dict, key: str, value: Any) -> None:
  """Sets dotted `key` of a plain-dict config to `value`, checked against the schema: an unknown
  key or a value of the wrong type fails; a whole section is checked key by key."""
  spec: schema.Spec = schema.SCHEMA
  node, path = cfg, ""
  parts = key.split(".")
  for i, part in enumerate(parts):
    child = spec.child(part, node, path)
    path = f"{path}.{part}" if path else part
    if i == len(parts) - 1:
      node[part] = child.check(value, path)
      if isinstance(spec, schema.Variant) and part == spec.key:
        # Switching a variant (optax.name=sgd) drops the keys the new option does not take.
        keep = spec.child_fields(node, path)
        for key in [k for k in node if k not in keep]:
          del node[key]
      return
    if node.get(part) is None:
      node[part] = {}
    spec, node = child, node[part]


def parse_overrides(cfg: dict, argv: list[str]) -> None:
  """Applies `--config.a.b=value` (or `--config.a.b value`) arguments to a plain-dict config."""
  i = 0
  while i < len(argv):
    arg = argv[i]
    if not arg.startswith("--config."):
      raise ConfigError(f"unrecognised argument {arg!r}; overrides look like --config.total_steps=200")
    key = arg[len("--config."):]
    if "=" in key:
      key, text = key.split("=", 1)
    elif i + 1 < len(argv):
      i += 1
      text = argv[i]
    else:
      raise ConfigError(f"{arg} needs a value, e.g. {arg}=100")
    override(cfg, key, parse_value(text))
    i += 1


def resolve(cfg) -> ml_collections.ConfigDict:
  """The complete config: every key checked against the schema, defaults filled."""
  return ml_collections.ConfigDict(schema.SCHEMA.check(_upgrade(dict(_plain(cfg))), ""))


def _upgrade(cfg: dict) -> dict:
  """A config written before `objectives` (with `task` and a `classify` section) as its terms:
  task='classify' is objectives={'classify': classify}, task='contrastive' the default."""
  task, settings = cfg.pop("task", None), cfg.pop("classify", None)
  if task == "classify" and "objectives" not in cfg:
    cfg["objectives"] = {"classify": dict(settings or {})}
  elif task not in (None, "contrastive", "classify"):
    raise ConfigError(f"config.task={task!r} is not one of ['contrastive', 'classify']; "
                      "config.objectives names the training terms now")
  return cfg


def from_args(spec: str, argv: list[str] = (), overrides: dict[str, Any] | None = None
              ) -> ml_collections.ConfigDict:
  """`load(spec)`, then `--config.*` arguments and `overrides` ({dotted key: value}), resolved."""
  cfg = _plain(load(spec))
  parse_overrides(cfg, list(argv))
  for key, value in (overrides or {}).items():
    override(cfg, key, value)
  return resolve(cfg)


def resolve_steps(cfg, name: str, batch_size: int, epoch_size: int | None = None,
                  default: int | None = None) -> int | None:
  """Resolves `{name}_steps`, `{name}_examples` or `{name}_epochs` (at most one set) to steps."""
  given = {unit: cfg.get(f"{name}_{unit}") for unit in ("steps", "examples", "epochs")}
  given = {u: v for u, v in given.items() if v is not None}
  if len(given) > 1:
    raise ConfigError(f"set only one of {[f'{name}_{u}' for u in given]}")
  if not given:
    return default
  unit, value = next(iter(given.items()))
  if unit == "steps":
    return int(value)
  if unit == "examples":
    return max(1, int(round(value / batch_size)))
  if epoch_size is None:
    raise ConfigError(f"{name}_epochs needs a dataset of known size; use {name}_steps")
  return max(1, int(round(value * epoch_size / batch_size)))


def durations(cfg: ml_collections.ConfigDict) -> tuple[int, int, list[str]]:
  """(total_steps, warmup_steps, warnings): the run's durations in steps. A warmup that is not
  shorter than the run (a smoke run of a long recipe) is capped at 10% of it, with a warning."""
  total = resolve_steps(cfg, "total", cfg.batch_size)
  if total is None:
    raise ConfigError("set config.total_steps (or config.total_examples)")
  warmup = resolve_steps(cfg.schedule, "warmup", cfg.batch_size, default=0)
  warnings = []
  if warmup >= total:
    capped = total // 10
    warnings.append(f"schedule warmup of {warmup} steps is not shorter than the run "
                    f"({total} steps); capped at {capped} (10% of the run)")
    warmup = capped
  return total, warmup, warnings


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks what the schema cannot see alone: how keys fit together and with the devices."""
  if cfg.batch_size % num_devices:
    raise ConfigError(f"config.batch_size={cfg.batch_size} is not divisible by the {num_devices} "
                      f"devices; use a multiple of {num_devices}")
  accum = cfg.grad_accum_steps
  if cfg.batch_size % (accum * num_devices):
    raise ConfigError(f"config.grad_accum_steps={accum}: batch_size {cfg.batch_size} must be "
                      f"divisible by grad_accum_steps x devices = {accum * num_devices}")
  from big_vision_lite import objectives  # pylint: disable=import-outside-toplevel
  terms = objectives.make_terms(cfg)  # Unknown names, `start` outside [0, 1), missing options.
  names = [t.name for t in terms]
  if "classify" in names and cfg.objectives.classify.head_init == "zeroshot" and not cfg.model_init:
    raise ConfigError("objectives.classify.head_init='zeroshot' embeds the class names with the "
                      "text tower of config.model_init: set model_init (or head_init='zeros')")
  text_evals = [n for n, e in cfg.evals.items() if e.type in ("zeroshot", "retrieval")]
  head_evals = [n for n, e in cfg.evals.items() if e.type == "classify"]
  if "classify" in names and text_evals:
    raise ConfigError(f"config.evals {text_evals} need a text tower, which a model trained "
                      "with objectives.classify has not: use type='classify' (or 'fewshot', "
                      "'linear_probe')")
  if "classify" not in names and head_evals:
    raise ConfigError(f"config.evals {head_evals}: type='classify' measures the head of "
                      "objectives.classify; evaluate a contrastive model with 'zeroshot'")
  if cfg.lora and any(cfg.model[t].get("scan") for t in ("image", "text")):
    raise ConfigError("config.lora adapts unscanned towers: set model.image.scan and "
                      "model.text.scan to False")
  durations(cfg)


def from_json(path: str) -> ml_collections.ConfigDict:
  """A run's config.json, resolved (so a config written by an older version gains new keys)."""
  return resolve(load(path))


def to_json(cfg: ml_collections.ConfigDict) -> str:
  """The resolved config as indented JSON."""
  return json.dumps(_plain(cfg), indent=2, sort_keys=True, default=str)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  if isinstance(d, dict) and d:
    out = {}
    for k, v in d.items():
      out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return out
  return {prefix: d}


UNSET = "<unset>"  # How `differences` shows a key that one side lacks.


def differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (old value, new value)} for every key whose value differs between two
  configs as `to_json` writes them (plain dicts); a key only one has shows UNSET on the other."""
  old_flat, new_flat = flatten(old), flatten(new)
  return {k: (old_flat.get(k, UNSET), new_flat.get(k, UNSET))
          for k in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(k, UNSET) != new_flat.get(k, UNSET)}
