"""SigLIP's bias and temperature initialisation (paper Table 4) at full scale, for a cluster:
ViT-B/16 + B text at 224 px (configs/siglip_b16.py) at batch 8k on image-text tar shards,
ImageNet zero-shot as the metric.

  python -m big_vision_lite.sweep \\
    'configs/sweeps/siglip_bias_temperature_full.py:shards=/data/webli/shards-{00000..09999}.tar,imagenet=/data/tfds,tokenizer=/data/sp32k.model' \\
    --workdir /shared/sweeps/bias_temperature --slurm --sbatch time=3-00:00:00 --submit
  python -m big_vision_lite.sweep.report /shared/sweeps/bias_temperature

Published (ImageNet zero-shot, B/16 at batch 8k): b=-10, t'=log 10: 63.0; no bias, log 10: 62.0;
b=0, log 10: 61.7; b=-10, t'=log 1: 61.0; b=0, t'=log 1: 53.7 (t = exp(t') is
`model.temperature_init`). Arguments as for siglip_loss_batch_full.py.
"""

import importlib.util
import os

from big_vision_lite import config as config_lib
from big_vision_lite.sweep import Sweep

BATCH = 8192


def _loss_batch():
  """The sibling sweep file, for its config and evaluation helpers."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "siglip_loss_batch_full.py")
  spec = importlib.util.spec_from_file_location("_siglip_loss_batch_full", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_sweep(arg: str | None = None) -> Sweep:
  name = "configs/sweeps/siglip_bias_temperature_full.py"
  args = config_lib.parse_arg(
      arg, {"shards", "imagenet", "tokenizer", "vocab", "examples", "seeds"}, name)
  full = _loss_batch()
  examples = int(args.get("examples", full.EXAMPLES))
  points = [{"model.bias_init": b, "model.temperature_init": t}
            for b, t in ((-10.0, 10.0), (None, 10.0), (0.0, 10.0), (-10.0, 1.0), (0.0, 1.0))]
  return Sweep(
      config=full.b16_config(args, name),
      base={"batch_size": BATCH, "total_steps": None, "total_examples": examples,
            "schedule": {"warmup_examples": examples // 20, "decay_type": "cosine"},
            "evals": full.imagenet_eval(args["imagenet"]), "eval_steps": 1_000_000},
      points=points, seeds=tuple(range(int(args.get("seeds", 1)))),
      seed_keys=("seed", "input.seed"), metrics=("zeroshot/imagenet2012/top1",),
      plot_x="model.bias_init", slurm={"nodes": 4, "gpus-per-node": 8},
      description="SigLIP Table 4: initial bias b and temperature t = exp(t'), B/16 at batch "
                  f"8k on tar shards, {examples:,} examples; ImageNet zero-shot top-1. "
                  "Published: b=-10,t=10: 63.0; no b,t=10: 62.0; b=0,t=10: 61.7; b=-10,t=1: "
                  "61.0; b=0,t=1: 53.7.")
