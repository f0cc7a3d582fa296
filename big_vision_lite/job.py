"""What every entry point does first, written once: the command line, the config, joining the
processes, the mesh, the model and the evaluators (errors.run is how a run ends on an error).

The trainer, the standalone evaluator and the tools call these functions, so a rule such as the
image size (`config.model.image.image_size`) or the evaluator defaults lives in one place.
"""

import argparse
import datetime
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from big_vision_lite import config as config_lib
from big_vision_lite import distributed, errors, evaluators, objectives, pytree, weights
from big_vision_lite import sharding as sharding_lib
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.models import lora
from big_vision_lite.models import vit as vit_lib
from big_vision_lite.models.two_towers import TwoTowers


def argument_parser(doc: str, config_help: str = "configs/NAME.py[:ARG]",
                    config_required: bool = True,
                    workdir_required: bool = True) -> argparse.ArgumentParser:
  """A parser with the flags every entry point takes: --config, --workdir, multi-process flags;
  `--config.KEY=VALUE` overrides are collected by `parse`."""
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", required=config_required, default=None, help=config_help)
  p.add_argument("--workdir", required=workdir_required, default=None, help="the run's directory")
  distributed.add_flags(p)
  return p


def parse(parser: argparse.ArgumentParser, argv: list[str],
          default_config: Callable[[argparse.Namespace], str] | None = None
          ) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
  """(flags, resolved config): the config file (or `default_config(flags)` when --config is not
  given) with its `--config.KEY=VALUE` overrides, checked against the schema."""
  args, rest = parser.parse_known_args(argv)
  spec = args.config or (default_config(args) if default_config else None)
  return args, config_lib.from_args(spec, rest)


def start(args: argparse.Namespace, config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """Joins a multi-process job if this is one, and returns the config's device mesh after
  checking the config against the devices."""
  distributed.initialize_from(args)
  mesh = sharding_lib.make_mesh(config.mesh)
  config_lib.validate(config, mesh.devices.size)
  return mesh


def build_model(config: ml_collections.ConfigDict) -> TwoTowers:
  """The model of `config.model`, with the options its objectives need (classify: a head)."""
  return TwoTowers(**config.model.to_dict(), **objectives.model_options(config))


def apply_fn(config: ml_collections.ConfigDict, model: TwoTowers) -> Callable:
  """The forward pass `(params, images or None, tokens or None) -> (zimg, ztxt, aux)`, with the
  LoRA adapters in `params['lora']` applied when the config has them. A NaFlex model given
  square images [B, S, S, 3] (the evaluators') takes their whole patch grid (vit.patchify_grid)."""
  alpha = config.lora.alpha if config.lora else 0.0
  patch = naflex_patch_size(config)

  def apply(params, images, texts):
    if patch and images is not None and not isinstance(images, dict):
      images = vit_lib.patchify_grid(images, patch)
    return lora.apply(model, params, images, texts, alpha=alpha)
  return apply


def naflex_patch_size(config) -> int | None:
  """The NaFlex ViT's (square) patch size; None for a model that takes square images."""
  image = config.model.image
  if not image.get("naflex"):
    return None
  patch = tuple(image.get("patch_size") or vit_lib.decode_variant(image.get("variant"))
                .get("patch_size", ()))
  if len(patch) != 2 or patch[0] != patch[1]:
    raise config_lib.ConfigError(f"NaFlex needs a square patch size, got model.image.patch_size"
                                 f"={patch or None}: set a variant such as 'B/16' or patch_size")
  return patch[0]



def load_model_init(config: ml_collections.ConfigDict, fresh, mesh=None, shardings=None):
  """The parameters of `config.model_init`, fitted to `config.model` (weights.load_params), on
  `shardings` (or on the host). Parameters named by `config.model_load.dont_load`, and LoRA
  adapters, keep their values in `fresh` (a freshly initialised tree). Parameters the objectives
  add (a decoder, a head) are loaded when the checkpoint has them all at their shapes (a run of
  the same recipe), else kept fresh; then each term adjusts what it owns (Term.init_from)."""
  fresh_host = jax.device_get(fresh)
  model_keys = {n.split("/")[0] for n in weights.target_shapes(config.model.to_dict())}
  base = {k: v for k, v in fresh_host.items() if k in model_keys}
  added = [k for k in fresh_host if k not in model_keys and k != lora.KEY]
  # Other terms' parameters in the checkpoint (a SigLIP 2 run's decoder and heads read as a
  # VLM's encoder) are its training terms', not the towers': left out.
  others = sorted(objectives.param_names() - set(added) - model_keys)
  loaded = weights.load_params(config.model_init, config.model.to_dict(), init_params=base,
                               dont_load=config.model_load.dont_load,
                               tokenizer=tokenizer_spec(config), beside=[*added, *others])
  rules = [(r, True) for r in config.model_load.dont_load]
  kept = sum(pytree.match_rules(rules, n, False) for n, _ in pytree.named_leaves(base))
  left_out = []
  if added:  # (A second read of the checkpoint, only when the config adds parameters.)
    flat, _ = weights.read(config.model_init)
    left_out = [k for k in others if any(n.split("/")[0] == k for n in flat)]
    for key in added:
      names = [(f"{key}/{n}" if n else key, x) for n, x in pytree.named_leaves(fresh_host[key])]
      if all(n in flat and np.shape(flat[n]) == np.shape(x)
             and not pytree.match_rules(rules, n, False) for n, x in names):
        loaded[key] = jax.tree.unflatten(jax.tree.structure(fresh_host[key]),
                                         [np.asarray(flat[n], np.float32) for n, _ in names])
      else:
        loaded[key] = fresh_host[key]
  for term in objectives.make_terms(config, mesh):
    loaded = term.init_from(config, loaded, fresh_host, mesh)
  if lora.KEY in fresh_host:
    loaded[lora.KEY] = fresh_host[lora.KEY]
  print0(f"initialised from {config.model_init}"
         + (f" ({kept} parameter(s) kept fresh: model_load.dont_load)" if kept else "")
         + (f"; left out the parameters of terms this config does not train: {left_out}"
            if left_out else ""))
  return jax.device_put(loaded, shardings) if shardings is not None else loaded


def tokenizer_spec(config: ml_collections.ConfigDict) -> str:
  """config.input.tokenizer; else the tokenizer a Hugging Face model_init directory carries;
  else the shipped shapes tokenizer."""
  if config.input.tokenizer:
    return config.input.tokenizer
  return (config.get("model_init") and weights.hf.tokenizer_spec(config.model_init)
          or tok_lib.SHAPES_MODEL)


def check_vocab(config: ml_collections.ConfigDict) -> None:
  """The text tower's vocabulary, and the objectives' (the LocCa decoder's), must hold every id
  the tokenizer produces."""
  vocab = tok_lib.get(tokenizer_spec(config)).vocab_size
  if config.model.text.vocab_size < vocab:
    raise errors.ConfigError(
        f"config.model.text.vocab_size={config.model.text.vocab_size} is smaller than the "
        f"tokenizer's {vocab} pieces ({tokenizer_spec(config)}); set it to at least {vocab}")
  for term in objectives.make_terms(config):
    term.check_tokenizer(vocab, tokenizer_spec(config))


def build_evaluators(config: ml_collections.ConfigDict, model: TwoTowers, mesh,
                     names: list[str] | None = None) -> dict[str, tuple[Any, int | None]]:
  """{name: (evaluator, every_steps)} for `config.evals` (or the entries in `names`), embedding
  at the model's image size and text length with the config's tokenizer."""
  evals = dict(config.evals)
  if names is not None:
    unknown = [n for n in names if n not in evals]
    if unknown:
      raise errors.ConfigError(f"--evals {unknown} not in config.evals ({list(evals)})")
    evals = {n: evals[n] for n in names}
  embedder = Embedder(apply_fn(config, model), mesh, config.eval_batch_size)
  defaults = dict(image_size=config.model.image.image_size, max_len=config.model.text.max_len,
                  tokenizer=tokenizer_spec(config))
  for term in objectives.make_terms(config, mesh):
    defaults.update(term.evaluator_defaults())
  return evaluators.make_evaluators(evals, embedder, defaults)


# --- Resuming with a changed config.

CONFIG_CHANGES = "config_changes.jsonl"  # In the workdir: each change a resume accepted.
# Keys that change how a run is watched, not what it trains: a resume takes them (recorded).
_WATCHING = ("log_training_steps", "ckpt_steps", "keep_ckpts", "eval_steps", "eval_batch_size",
             "evals.", "input.num_workers", "max_nonfinite_steps")
# Keys whose change mid-run is meaningful (a longer run, another learning rate or schedule): a
# resume takes them with --accept_config_changes (recorded). Any other key (model shapes, loss,
# batch, data, optimiser, seeds) cannot change mid-run.
_MID_RUN = ("total_steps", "total_examples", "total_epochs", "lr", "wd", "grad_clip_norm",
            "schedule.", "wd_mults")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
  return any(key == p.rstrip(".") or (p.endswith(".") and key.startswith(p)) for p in patterns)


def _show(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  return text if len(text) <= 60 else text[:57] + "..."


def resume_changes(workdir: str, config: ml_collections.ConfigDict, accept: bool,
                   checkpoint_step: int | None, total_steps: int) -> dict[str, tuple[Any, Any]]:
  """{key: (old, new)}: how `config` differs from the config.json of the run in `workdir`, when
  it has a checkpoint (`checkpoint_step`) to resume. Keys that only change how the run is
  watched (logging, checkpoint and evaluation intervals) are taken; meaningful mid-run changes
  (total_steps, lr, wd, grad_clip_norm, schedule) only with `accept` (--accept_config_changes);
  any other change is a ConfigError listing every difference. Nothing is written here: see
  `record_changes`."""
  path = os.path.join(workdir, "config.json")
  if checkpoint_step is None or not os.path.exists(path):
    return {}
  try:
    old = json.loads(config_lib.to_json(config_lib.from_json(path)))
  except (ValueError, errors.Error) as e:
    print0(f"warning: cannot compare the config with {path} ({e}); resuming without checking")
    return {}
  changes = config_lib.differences(old, json.loads(config_lib.to_json(config)))
  never = [k for k in changes if not _matches(k, _WATCHING + _MID_RUN)]
  asked = [k for k in changes if _matches(k, _MID_RUN)]
  lines = lambda keys: "\n".join(f"  {k}: {_show(changes[k][0])} -> {_show(changes[k][1])}"
                                  for k in keys)
  if never:
    raise config_lib.ConfigError(
        f"{workdir} holds a run (checkpoint at step {checkpoint_step}) trained with another "
        f"config; these keys cannot change mid-run:\n{lines(never)}\nRun the same config to "
        f"resume it (its config is {path}), or use a fresh --workdir for the new one.")
  if asked and not accept:
    raise config_lib.ConfigError(
        f"{workdir} holds a run (checkpoint at step {checkpoint_step}) trained with another "
        f"config:\n{lines(asked)}\nTo go on with the change, add --accept_config_changes (it "
        f"is recorded with its step in {os.path.join(workdir, CONFIG_CHANGES)}); to resume as "
        "before, drop the change.")
  if total_steps < checkpoint_step:
    raise config_lib.ConfigError(
        f"the run in {workdir} is at step {checkpoint_step}, past the new total of "
        f"{total_steps} steps: set total_steps to {checkpoint_step} or more")
  return changes


def record_changes(workdir: str, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
  """Appends the config changes a resume from `step` took to DIR/config_changes.jsonl and
  prints them (process 0)."""
  if not changes or jax.process_index() != 0:
    return
  row = {"step": step, "time": datetime.datetime.now().isoformat(timespec="seconds"),
         "changes": {k: {"old": old, "new": new} for k, (old, new) in changes.items()}}
  with open(os.path.join(workdir, CONFIG_CHANGES), "a") as f:
    f.write(json.dumps(row) + "\n")
  shown = ", ".join(f"{k} {_show(old)} -> {_show(new)}" for k, (old, new) in changes.items())
  print0(f"config changed at step {step}: {shown} (recorded in {workdir}/{CONFIG_CHANGES})")


def print0(*args) -> None:
  """print on process 0 only, flushed."""
  if jax.process_index() == 0:
    print(*args, flush=True)


def format_results(results: dict[str, float]) -> str:
  """One line per evaluated dataset: '  zeroshot/cifar10: top1 0.912  top5 0.998 ...'."""
  groups: dict[str, list[str]] = {}
  for key, value in sorted(results.items()):
    group, _, name = key.rpartition("/")
    groups.setdefault(group, []).append(f"{name} {value:.3f}")
  return "\n".join(f"  {group}: " + "  ".join(items) for group, items in groups.items())


def print_results(title: str, results: dict[str, float]) -> None:
  """The final metrics, one per line."""
  print0(title)
  for k, v in sorted(results.items()):
    print0(f"  {k:45s} {v:.4f}")
