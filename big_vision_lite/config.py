"""Config helpers: loading `configs/*.py`, `--config.key=value` overrides, validation, durations."""

import ast
import difflib
import importlib.util
import json
import os
from typing import Any

import ml_collections

from big_vision_lite import errors

TOP_LEVEL_KEYS = {  # key -> required
    "seed": True, "batch_size": True, "total_steps": False, "total_examples": False,
    "log_training_steps": True, "ckpt_steps": True, "keep_ckpts": True, "eval_steps": True,
    "loss": True, "lr": True, "wd": True, "grad_clip_norm": False, "lr_mults": False,
    "wd_mults": False, "model": True, "optax": True, "schedule": True, "input": True,
    "evals": True, "eval_batch_size": False, "grad_accum_steps": False, "mesh": False,
    "sharding_rules": False,
}


class ConfigError(errors.Error, ValueError):
  """A config that cannot run; the message names the key and the fix."""


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` by calling its `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"config file {path!r} not found (pass e.g. --config configs/siglip_shapes.py)")
  module_spec = importlib.util.spec_from_file_location("_bvl_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config(arg) function")
  return module.get_config(arg) if arg else module.get_config()


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


def _flat_keys(cfg, prefix="") -> list[str]:
  keys = []
  for k, v in cfg.items():
    keys.append(prefix + k)
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      keys.extend(_flat_keys(v, prefix + k + "."))
  return keys


def _unknown(key: str, cfg) -> ConfigError:
  close = difflib.get_close_matches(key, _flat_keys(cfg), n=1, cutoff=0.6)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return ConfigError(f"unknown config key {key!r}{hint}")


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A bare string such as `--config.loss=softmax`.


def override(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets dotted `key` from its command-line text; unknown keys and wrong types fail."""
  *parents, leaf = key.split(".")
  node = cfg
  for p in parents:
    if p not in node or not isinstance(node[p], (ml_collections.ConfigDict, dict)):
      raise _unknown(key, cfg)
    node = node[p]
  if leaf not in node:
    raise _unknown(key, cfg)
  value, old = _parse_value(text), node[leaf]
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  sequence_or_dict = (tuple, list, dict, ml_collections.ConfigDict)
  if (old is not None and value is not None and type(old) is not type(value)
      and not (isinstance(old, sequence_or_dict) and isinstance(value, sequence_or_dict))):
    raise ConfigError(f"config key {key!r} expects {type(old).__name__} (now {old!r}), got {text!r}")
  if isinstance(old, ml_collections.ConfigDict) and isinstance(value, dict):
    value = ml_collections.ConfigDict(value)
  if isinstance(node, ml_collections.ConfigDict) and isinstance(old, ml_collections.ConfigDict):
    with node.ignore_type():  # A dict may replace a dict (or a list of them, for mixtures).
      node[leaf] = value
  else:
    node[leaf] = value


def parse_overrides(cfg: ml_collections.ConfigDict, argv: list[str]) -> None:
  """Applies `--config.a.b=value` (or `--config.a.b value`) arguments in order."""
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
    override(cfg, key, text)
    i += 1


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


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
  """Fails fast, naming the key, on a config that cannot run."""
  from big_vision_lite.losses import NAMES  # pylint: disable=import-outside-toplevel
  for key in cfg:
    if key not in TOP_LEVEL_KEYS:
      raise _unknown(key, ml_collections.ConfigDict({k: None for k in TOP_LEVEL_KEYS}))
  for key, required in TOP_LEVEL_KEYS.items():
    _check(not required or key in cfg, f"config is missing required key {key!r}")
  _check(cfg.loss in NAMES, f"config.loss={cfg.loss!r} is not one of {list(NAMES)}")
  _check(isinstance(cfg.batch_size, int) and cfg.batch_size > 0,
         f"config.batch_size must be a positive int, got {cfg.batch_size!r}")
  _check(cfg.batch_size % num_devices == 0,
         f"config.batch_size={cfg.batch_size} is not divisible by the {num_devices} devices; "
         f"use a multiple of {num_devices}")
  accum = cfg.get("grad_accum_steps") or 1
  _check(isinstance(accum, int) and accum >= 1 and cfg.batch_size % (accum * num_devices) == 0,
         f"config.grad_accum_steps={accum}: batch_size {cfg.batch_size} must be divisible by "
         f"grad_accum_steps x devices = {accum * num_devices}")
  _check(cfg.get("total_steps") is not None or cfg.get("total_examples") is not None,
         "set config.total_steps (or total_examples)")
  for key in ("log_training_steps", "ckpt_steps", "eval_steps", "keep_ckpts"):
    _check(isinstance(cfg[key], int) and cfg[key] > 0, f"config.{key} must be a positive int, "
           f"got {cfg[key]!r}")
  _check(cfg.lr > 0, f"config.lr must be > 0, got {cfg.lr}")
  _check(cfg.wd >= 0, f"config.wd must be >= 0, got {cfg.wd}")


def from_json(path: str) -> ml_collections.ConfigDict:
  """A config written by `to_json` (a run's config.json); lists stand where tuples were."""
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def to_json(cfg: ml_collections.ConfigDict) -> str:
  """The resolved config as indented JSON."""
  return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)
