"""What every entry point does first, written once: the command line, the config, joining the
processes, the mesh, the model and the evaluators; and how a run ends on an error.

The trainer, the standalone evaluator and the tools call these functions, so a rule such as the
image size (`config.model.image.image_size`) or the evaluator defaults lives in one place.
"""

import argparse
import sys
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
  LoRA adapters in `params['lora']` applied when the config has them."""
  alpha = config.lora.alpha if config.lora else 0.0
  return lambda params, images, texts: lora.apply(model, params, images, texts, alpha=alpha)


def load_model_init(config: ml_collections.ConfigDict, fresh, mesh=None, shardings=None):
  """The parameters of `config.model_init`, fitted to `config.model` (weights.load_params), on
  `shardings` (or on the host). Parameters named by `config.model_load.dont_load`, and LoRA
  adapters, keep their values in `fresh` (a freshly initialised tree). Parameters the objectives
  add (a decoder, a head) are loaded when the checkpoint has them all at their shapes (a run of
  the same recipe), else kept fresh; then each term adjusts what it owns (Term.init_from)."""
  fresh_host = jax.device_get(fresh)
  model_keys = {n.split("/")[0] for n in weights.target_shapes(config.model.to_dict())}
  base = {k: v for k, v in fresh_host.items() if k in model_keys}
  loaded = weights.load_params(config.model_init, config.model.to_dict(), init_params=base,
                               dont_load=config.model_load.dont_load,
                               tokenizer=tokenizer_spec(config))
  rules = [(r, True) for r in config.model_load.dont_load]
  kept = sum(pytree.match_rules(rules, n, False) for n, _ in pytree.named_leaves(base))
  added = [k for k in fresh_host if k not in model_keys and k != lora.KEY]
  if added:
    flat, _ = weights.read(config.model_init)
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
         + (f" ({kept} parameter(s) kept fresh: model_load.dont_load)" if kept else ""))
  return jax.device_put(loaded, shardings) if shardings is not None else loaded


def tokenizer_spec(config: ml_collections.ConfigDict) -> str:
  return config.input.tokenizer or tok_lib.SHAPES_MODEL


def check_vocab(config: ml_collections.ConfigDict) -> None:
  """The text tower's vocabulary, and the objectives' (the LocCa decoder's), must hold every id
  the tokenizer produces."""
  vocab = tok_lib.get(tokenizer_spec(config)).vocab_size
  if config.model.text.vocab_size < vocab:
    raise config_lib.ConfigError(
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
      raise config_lib.ConfigError(f"--evals {unknown} not in config.evals ({list(evals)})")
    evals = {n: evals[n] for n in names}
  embedder = Embedder(apply_fn(config, model), mesh, config.eval_batch_size)
  defaults = dict(image_size=config.model.image.image_size, max_len=config.model.text.max_len,
                  tokenizer=tokenizer_spec(config))
  for term in objectives.make_terms(config, mesh):
    defaults.update(term.evaluator_defaults())
  return evaluators.make_evaluators(evals, embedder, defaults)


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


def run(main: Callable[[], Any]) -> None:
  """Runs an entry point's `main`: an errors.Error prints its message (no traceback) and exits
  with its exit code."""
  try:
    main()
  except errors.Error as e:
    print(f"{e.label}: {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
