"""Sigmoid vs softmax loss across the SigLIP paper's batch sizes (Fig. 2), full scale, for a
cluster: ViT-B/16 + B text at 224 px (configs/siglip_b16.py) on image-text tar shards, with
ImageNet zero-shot as the metric. Every run sees the same number of examples.

  python -m big_vision_lite.sweep \\
    'configs/sweeps/siglip_loss_batch_full.py:shards=/data/webli/shards-{00000..09999}.tar,imagenet=/data/tfds,tokenizer=/data/sp32k.model' \\
    --workdir /shared/sweeps/loss_batch --slurm --sbatch time=3-00:00:00 --submit
  python -m big_vision_lite.sweep.report /shared/sweeps/loss_batch

Argument (','-joined key=value): `shards` (required; as for configs/siglip_b16.py),
`imagenet` (required: the tfds data_dir where imagenet2012 is prepared), `tokenizer`, `vocab`
(as for siglip_b16.py), `examples` (examples seen per run; default 900M), `seeds` (default 1).
Sigmoid starts at b = -log(batch size) (-10.4 at 32k, SigLIP's -10), softmax has no bias.
"""

import math
import os

from big_vision_lite import config as config_lib
from big_vision_lite.sweep import Sweep, product

CONFIGS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHES = [512, 1024, 2048, 4096, 8192, 16_384, 32_768]
EXAMPLES = 900_000_000


def imagenet_eval(data_dir: str) -> dict:
  """ImageNet zero-shot with CLIP's class names and 80 prompts, at the training resolution."""
  return {"imagenet": {"type": "zeroshot", "dataset": "imagenet2012", "split": "validation",
                       "data_dir": data_dir, "classnames": "clip", "templates": "clip",
                       "pp": "decode|resize_small(224)|central_crop(224)"}}


def b16_config(args: dict[str, str], sweep_file: str) -> str:
  """configs/siglip_b16.py with the shards and tokenizer arguments of the sweep."""
  for key in ("shards", "imagenet"):
    if key not in args:
      raise config_lib.ConfigError(
          f"{sweep_file} needs {key}=..., e.g. '{sweep_file}:shards=/data/shards-"
          "{00000..09999}.tar,imagenet=/data/tfds'")
  passed = ",".join(f"{k}={args[k]}" for k in ("shards", "tokenizer", "vocab") if k in args)
  return os.path.join(CONFIGS, "siglip_b16.py") + ":" + passed


def bias_init(point: dict) -> dict:
  sigmoid = point["loss"].startswith("sigmoid")
  return {"model.bias_init": -math.log(point["batch_size"]) if sigmoid else None}


def get_sweep(arg: str | None = None) -> Sweep:
  name = "configs/sweeps/siglip_loss_batch_full.py"
  args = config_lib.parse_arg(
      arg, {"shards", "imagenet", "tokenizer", "vocab", "examples", "seeds"}, name)
  examples = int(args.get("examples", EXAMPLES))
  return Sweep(
      config=b16_config(args, name),
      base={"total_steps": None, "total_examples": examples,
            "schedule": {"warmup_examples": examples // 20, "decay_type": "cosine"},
            "evals": imagenet_eval(args["imagenet"]), "eval_steps": 1_000_000},
      points=product(loss=["sigmoid", "softmax"], batch_size=BATCHES), derived=bias_init,
      seeds=tuple(range(int(args.get("seeds", 1)))), seed_keys=("seed", "input.seed"),
      metrics=("zeroshot/imagenet2012/top1",), plot_x="batch_size",
      slurm={"nodes": 4, "gpus-per-node": 8},
      description="Sigmoid vs softmax across batch sizes, B/16 on tar shards, every run seeing "
                  f"{examples:,} examples; ImageNet zero-shot top-1.")
