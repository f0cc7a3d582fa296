"""Evaluates a checkpoint with the config's evaluators (zero-shot, retrieval, few-shot).

  python -m big_vision_lite.evaluate --workdir DIR [--config F] [--step N] [--config.KEY=VALUE ...]

Loads the newest (or `--step`) checkpoint under DIR/checkpoints and runs every entry of
`config.evals` (or those named by `--evals`), writing DIR/eval/<step>.json. `--config` defaults
to the run's own DIR/config.json. `--clip_benchmark` also writes one JSON per evaluation in
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
from big_vision_lite import config as config_lib
from big_vision_lite import job
from big_vision_lite import sharding as sharding_lib


def _write_json(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def _run_config(args) -> str:
  path = os.path.join(args.workdir, "config.json")
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"{path} not found: pass --config configs/NAME.py (the config "
                                 "the checkpoint was trained with)")
  return path


def main(argv: list[str] | None = None) -> dict[str, float]:
  """Evaluates one checkpoint; returns {metric: value} over all evaluations."""
  p = job.argument_parser(__doc__, "configs/NAME.py[:ARG] (default: WORKDIR/config.json)",
                          config_required=False)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--evals", default=None, help="comma-separated names in config.evals (default: all)")
  p.add_argument("--clip_benchmark", action="store_true",
                 help="also write CLIP_benchmark-schema JSONs, one per evaluation")
  p.add_argument("--model_name", default=None, help="`model` in those JSONs (default: ViT-VARIANT)")
  p.add_argument("--export_embeddings", action="store_true",
                 help="write each evaluation's embeddings as .npy under WORKDIR/embeddings/STEP/")
  args, config = job.parse(p, sys.argv[1:] if argv is None else argv, _run_config)
  mesh = job.start(args, config)
  workdir = os.path.abspath(args.workdir)
  model = job.build_model(config)
  params_dir = os.path.join(workdir, "checkpoints")
  step = args.step
  if step is None:
    ckpt = ckpt_lib.Checkpointer(params_dir)
    step = ckpt.latest_step()
    ckpt.close()
  if step is None:
    raise ckpt_lib.CheckpointNotFound(f"no checkpoint under {params_dir}: train first (python -m "
                                "big_vision_lite.train --config F --workdir DIR)")
  params = ckpt_lib.restore_params(params_dir, step, sharding_lib.replicated(mesh))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.example_inputs()))
  ckpt_lib.check_shapes({"params": params}, abstract, f"{params_dir}/{step}")

  names = [n.strip() for n in args.evals.split(",") if n.strip()] if args.evals else None
  evals = job.build_evaluators(config, model, mesh, names)
  lead = jax.process_index() == 0
  results: dict[str, float] = {}
  model_name = args.model_name or f"ViT-{config.model.image.get('variant')}"
  for name, (evaluator, _) in evals.items():
    emb = evaluator.embed(params)
    measured = evaluator.metrics(emb)
    results.update(measured)
    if lead and args.export_embeddings:
      out = os.path.join(workdir, "embeddings", str(step), name)
      os.makedirs(out, exist_ok=True)
      for key, value in emb.items():
        np.save(os.path.join(out, key + ".npy"), value)
      # The first images as the model saw them (for plots); process 0 holds the first rows.
      np.save(os.path.join(out, "preview_images.npy"), evaluator.preview_images())
    if lead and args.clip_benchmark:
      _write_json(os.path.join(workdir, "eval", "clip_benchmark", str(step), name + ".json"), {
          "dataset": evaluator.dataset, "model": model_name,
          "pretrained": f"{params_dir}/{step}", "task": evaluator.benchmark_task,
          "metrics": evaluator.benchmark(measured), "language": "en"})
  if lead:
    _write_json(os.path.join(workdir, "eval", f"{step}.json"),
                {"step": step, "checkpoint": f"{params_dir}/{step}", "metrics": results})
  job.print_results(f"checkpoint {params_dir}/{step}:", results)
  return results


if __name__ == "__main__":
  job.run(main)
