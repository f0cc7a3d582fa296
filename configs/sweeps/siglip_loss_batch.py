"""Sigmoid (SigLIP) vs softmax (CLIP) loss across batch sizes (SigLIP paper Fig. 2 / Table 5),
at laptop scale on the embedded shapes data, with the number of examples seen held fixed (so a
batch of 32 takes 4x the steps of a batch of 128; the warmup is a fixed share of the examples).

  python -m big_vision_lite.sweep configs/sweeps/siglip_loss_batch.py \\
    --workdir workdirs/ablations/loss_batch --parallel 2
  python -m big_vision_lite.sweep.report workdirs/ablations/loss_batch \\
    --out docs/ablations/loss_batch

The paper finds sigmoid better than softmax at batches below 16k-32k, the two converging at
large batches. The sigmoid runs start their bias at the prior of a positive pair,
b = -log(batch size) (SigLIP's -10 is that prior at batch ~22k); softmax has no bias (it is
invariant to one). Both start at t = 10.

Argument: `examples=N` (examples seen by every run; default the base's 64000), `seeds=K`
(default 3).
"""

import math
import os

from big_vision_lite import config as config_lib
from big_vision_lite.sweep import Sweep, product

METRICS = ("zeroshot/shapes_shape/top1", "zeroshot/shapes_combo_heldout/top1",
           "retrieval/shapes/img2txt_r@1", "retrieval/shapes/txt2img_r@1",
           "fewshot/shapes_shape/10shot")


def bias_init(point: dict) -> dict:
  """The prior of a positive pair for the sigmoid loss; no bias for softmax."""
  sigmoid = point["loss"].startswith("sigmoid")
  return {"model.bias_init": -math.log(point["batch_size"]) if sigmoid else None}


def get_sweep(arg: str | None = None) -> Sweep:
  args = config_lib.parse_arg(arg, {"examples", "seeds"}, "configs/sweeps/siglip_loss_batch.py")
  config = os.path.join(os.path.dirname(__file__), "shapes_ablation.py")
  if "examples" in args:
    config += f":examples={args['examples']}"
  return Sweep(
      config=config, base={"model.temperature_init": 10.0},
      points=product(loss=["sigmoid", "softmax"], batch_size=[32, 64, 128, 256]),
      derived=bias_init, seeds=tuple(range(int(args.get("seeds", 3)))),
      seed_keys=("seed", "input.data.seed"), metrics=METRICS, plot_x="batch_size",
      description="Sigmoid vs softmax loss across batch sizes (SigLIP Fig. 2) at laptop scale, "
                  "every run seeing the same number of examples. Sigmoid starts at "
                  "b = -log(batch size), softmax has no bias; both at t = 10.")
