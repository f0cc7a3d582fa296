"""Evaluates a checkpoint with the config's evaluators (zero-shot, retrieval, few-shot).

  python -m big_vision_lite.evaluate --workdir DIR [--config F] [--step N] [--config.KEY=VALUE ...]

Loads the newest (or `--step`) checkpoint under DIR/checkpoints and runs every entry of
`config.evals` (or those named by `--evals`), writing DIR/eval/<step>.json. `--config` defaults
to the run's own DIR/config.json. Without a checkpoint (or without --workdir) the parameters
come from `config.model_init`: a released model is evaluated with one command,

  python -m big_vision_lite.evaluate --config 'configs/pretrained/clip_b32.py:init=PATH' --evals imagenet

(results are written under DIR/eval/init.json when --workdir is given, else only printed). `--clip_benchmark` also writes one JSON per evaluation in
CLIP_benchmark's schema (dataset, model, pretrained, task, metrics, language) under
DIR/eval/clip_benchmark/<step>/; `--export_embeddings` writes each evaluation's embeddings
(and labels / caption owners) as .npy under DIR/embeddings/<step>/<name>/. Multi-process runs
take the trainer's flags; every process takes part and process 0 writes.
"""

import json
import os
import sys
from typing import Any

import jax
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import errors, files, job
from big_vision_lite import sharding as sharding_lib


def _write_json(path: str, obj: Any) -> None:
  files.write_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def _run_config(args) -> str:
  if not args.workdir:
    raise errors.ConfigError("pass --config configs/NAME.py (or --workdir of a run, whose "
                                 "config.json is then used)")
  path = os.path.join(args.workdir, "config.json")
  if not os.path.exists(path):
    raise errors.ConfigError(f"{path} not found: pass --config configs/NAME.py (the config "
                                 "the checkpoint was trained with)")
  return path


def _params(args, config, model, mesh):
  """(label, parameters, where they come from): the run's checkpoint (newest or --step), else
  config.model_init."""
  params_dir = os.path.join(args.workdir, "checkpoints") if args.workdir else None
  if args.step is not None and not params_dir:
    raise config_lib.ConfigError("--step picks a checkpoint of a run: pass its --workdir too")
  replicated = sharding_lib.replicated(mesh)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.example_inputs()))
  if args.step is not None or (params_dir and ckpt_lib.Checkpointer(params_dir).all_steps()):
    # Without --step: the newest checkpoint that restores (a damaged one is skipped with a
    # warning, as the trainer does).
    params, step = ckpt_lib.restore_params(params_dir, args.step, replicated, with_step=True)
    ckpt_lib.check_shapes({"params": params}, abstract, f"{params_dir}/{step}")
    return str(step), params, f"{params_dir}/{step}"
  if config.model_init:
    fresh = jax.jit(lambda: model.init(jax.random.key(config.seed), *model.example_inputs())
                    )()["params"]
    params = job.load_model_init(config, fresh, mesh, jax.tree.map(lambda _: replicated, fresh))
    return "init", params, config.model_init
  where = f"under {params_dir}" if params_dir else "(no --workdir)"
  raise ckpt_lib.CheckpointNotFound(
      f"no checkpoint {where} and no config.model_init: train first (python -m "
      "big_vision_lite.train --config F --workdir DIR) or pass --config.model_init=PATH")


def main(argv: list[str] | None = None) -> dict[str, float]:
  """Evaluates one checkpoint; returns {metric: value} over all evaluations."""
  p = job.argument_parser(__doc__, "configs/NAME.py[:ARG] (default: WORKDIR/config.json)",
                          config_required=False, workdir_required=False)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--evals", default=None, help="comma-separated names in config.evals (default: all)")
  p.add_argument("--clip_benchmark", action="store_true",
                 help="also write CLIP_benchmark-schema JSONs, one per evaluation")
  p.add_argument("--model_name", default=None, help="`model` in those JSONs (default: the "
                 "image tower's type and variant)")
  p.add_argument("--export_embeddings", action="store_true",
                 help="write each evaluation's embeddings as .npy under WORKDIR/embeddings/STEP/")
  args, config = job.parse(p, sys.argv[1:] if argv is None else argv, _run_config)
  mesh = job.start(args, config)
  workdir = os.path.abspath(args.workdir) if args.workdir else None
  model = job.build_model(config)
  step, params, source = _params(args, config, model, mesh)
  names = [n.strip() for n in args.evals.split(",") if n.strip()] if args.evals else None
  evals = job.build_evaluators(config, model, mesh, names)
  write = jax.process_index() == 0 and workdir is not None  # Without a workdir: print only.
  results: dict[str, float] = {}
  image = config.model.image
  model_name = args.model_name or f"{image.type}-{image.get('variant')}"
  for name, (evaluator, _) in evals.items():
    emb = evaluator.embed(params)
    measured = evaluator.metrics(emb)
    results.update(measured)
    if write and args.export_embeddings:
      out = os.path.join(workdir, "embeddings", step, name)
      os.makedirs(out, exist_ok=True)
      for key, value in emb.items():
        np.save(os.path.join(out, key + ".npy"), value)
      # The first images as the model saw them (for plots); process 0 holds the first rows.
      np.save(os.path.join(out, "preview_images.npy"), evaluator.preview_images())
    if write and args.clip_benchmark:
      _write_json(os.path.join(workdir, "eval", "clip_benchmark", step, name + ".json"), {
          "dataset": evaluator.dataset, "model": model_name, "pretrained": source,
          "task": evaluator.benchmark_task, "metrics": evaluator.benchmark(measured),
          "language": "en"})
  if write:
    _write_json(os.path.join(workdir, "eval", f"{step}.json"),
                {"step": int(step) if step.isdigit() else step, "checkpoint": source,
                 "metrics": results})
  job.print_results(f"{source}:", results)
  return results


if __name__ == "__main__":
  errors.run(main)
