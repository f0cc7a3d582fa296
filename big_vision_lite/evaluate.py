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

import argparse
import json
import math
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import distributed, errors, evaluators
from big_vision_lite import sharding as sharding_lib
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators.common import Embedder
from big_vision_lite.models.two_towers import TwoTowers


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True, help="the training run's workdir")
  p.add_argument("--config", default=None, help="configs/NAME.py[:ARG] (default: WORKDIR/config.json)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--evals", default=None, help="comma-separated names in config.evals (default: all)")
  p.add_argument("--clip_benchmark", action="store_true",
                 help="also write CLIP_benchmark-schema JSONs, one per evaluation")
  p.add_argument("--model_name", default=None, help="`model` in those JSONs (default: ViT-VARIANT)")
  p.add_argument("--export_embeddings", action="store_true",
                 help="write each evaluation's embeddings as .npy under WORKDIR/embeddings/STEP/")
  distributed.add_flags(p)
  args, rest = p.parse_known_args(argv)
  if args.config:
    config = config_lib.load(args.config)
  else:
    path = os.path.join(args.workdir, "config.json")
    if not os.path.exists(path):
      raise config_lib.ConfigError(f"{path} not found: pass --config configs/NAME.py (the config "
                                   "the checkpoint was trained with)")
    config = config_lib.from_json(path)
  config_lib.parse_overrides(config, rest)
  return args, config


def image_size(config, abstract_params) -> int:
  """The resolution the image tower was trained at: from its learnt position embedding, else
  from config.input.data.image_size."""
  img = abstract_params["img"]
  if "pos_embedding" in img:
    tokens, patch = img["pos_embedding"].shape[1], img["embedding"]["kernel"].shape[0]
    side = math.isqrt(tokens)
    if side * side == tokens:
      return side * patch
  data = config.input.data
  size = data.get("image_size") if isinstance(data, (dict, ml_collections.ConfigDict)) else None
  if not size:
    raise config_lib.ConfigError("cannot tell the model's image size: set image_size in each "
                                 "config.evals entry (e.g. --config.evals.NAME.image_size=224)")
  return int(size)


def _write_json(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def _preview(evaluator, count: int = 16) -> np.ndarray:
  """The first `count` evaluation images, uint8 [n, H, W, 3]."""
  images = (evaluator.test if hasattr(evaluator, "test") else evaluator.set).images
  return np.asarray(images[:count])


def main(argv: list[str] | None = None) -> dict[str, float]:
  """Evaluates one checkpoint; returns {metric: value} over all evaluations."""
  args, config = parse_args(sys.argv[1:] if argv is None else argv)
  distributed.initialize_from(args)
  mesh = sharding_lib.make_mesh(config.get("mesh") or (("data", -1),))
  workdir = os.path.abspath(args.workdir)
  model = TwoTowers(**config.model.to_dict())
  params_dir = os.path.join(workdir, "checkpoints")
  step = args.step
  if step is None:
    ckpt = ckpt_lib.Checkpointer(params_dir)
    step = ckpt.latest_step()
    ckpt.close()
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {params_dir}: train first (python -m "
                            "big_vision_lite.train --config F --workdir DIR)")
  # Parameters replicated on the mesh; the resolution comes from the stored position embedding.
  params = ckpt_lib.restore_params(params_dir, step, sharding_lib.replicated(mesh))
  size = image_size(config, params)
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, size, size, 3), np.float32),
      np.zeros((1, config.input.max_len), np.int32))["params"])
  ckpt_lib.check_shapes({"params": params}, {"params": abstract}, f"{params_dir}/{step}")

  embedder = Embedder(model, mesh, config.get("eval_batch_size") or 256)
  defaults = dict(image_size=size, max_len=config.input.max_len,
                  tokenizer=config.input.get("tokenizer") or tok_lib.SHAPES_MODEL)
  evals_config = dict(config.evals)
  if args.evals:
    names = [n.strip() for n in args.evals.split(",") if n.strip()]
    unknown = [n for n in names if n not in evals_config]
    if unknown:
      raise config_lib.ConfigError(f"--evals {unknown} not in config.evals ({list(evals_config)})")
    evals_config = {n: evals_config[n] for n in names}
  evals = evaluators.make(evals_config, embedder, defaults)

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
      np.save(os.path.join(out, "preview_images.npy"), _preview(evaluator))
    if lead and args.clip_benchmark:
      _write_json(os.path.join(workdir, "eval", "clip_benchmark", str(step), name + ".json"), {
          "dataset": evaluator.dataset, "model": model_name,
          "pretrained": f"{params_dir}/{step}", "task": evaluator.benchmark_task,
          "metrics": evaluator.benchmark(measured), "language": "en"})
  if lead:
    _write_json(os.path.join(workdir, "eval", f"{step}.json"),
                {"step": step, "checkpoint": f"{params_dir}/{step}", "metrics": results})
    print(f"checkpoint {params_dir}/{step}:")
    for k, v in sorted(results.items()):
      print(f"  {k:45s} {v:.4f}")
  return results


if __name__ == "__main__":
  try:
    main()
  except errors.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
