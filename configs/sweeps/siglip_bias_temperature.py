"""SigLIP's initialisation of the sigmoid loss's bias b and temperature t (paper Table 4), at
laptop scale on the embedded shapes data (configs/sweeps/shapes_ablation.py: batch 128).

  python -m big_vision_lite.sweep configs/sweeps/siglip_bias_temperature.py \\
    --workdir workdirs/ablations/bias_temperature --parallel 2
  python -m big_vision_lite.sweep.report workdirs/ablations/bias_temperature \\
    --out docs/ablations/bias_temperature

Published (ImageNet zero-shot, B/16 at batch 8k): b=-10, t'=log 10: 63.0; no bias, t'=log 10:
62.0; b=0, t'=log 10: 61.7; b=-10, t'=log 1: 61.0; b=0, t'=log 1: 53.7. In our config t = exp(t')
starts at `model.temperature_init` (t'=log 10 is 10, log 1 is 1) and `model.bias_init=None` has
no bias. b is the log-odds prior of a positive pair, about -log(batch size): -10 is that prior at
batch ~22k, so at our batch of 128 the sweep adds b = -log 128 = -4.85 (t'=log 10).

Argument: `examples=N` (run length in examples seen; default the base's 64000), `seeds=K`
(default 3).
"""

import math
import os

from big_vision_lite import config as config_lib
from big_vision_lite.sweep import Sweep, named

BATCH = 128
METRICS = ("zeroshot/shapes_shape/top1", "zeroshot/shapes_combo_heldout/top1",
           "retrieval/shapes/img2txt_r@1", "retrieval/shapes/txt2img_r@1",
           "fewshot/shapes_shape/10shot")


def get_sweep(arg: str | None = None) -> Sweep:
  args = config_lib.parse_arg(arg, {"examples", "seeds"},
                              "configs/sweeps/siglip_bias_temperature.py")
  config = os.path.join(os.path.dirname(__file__), "shapes_ablation.py")
  if "examples" in args:
    config += f":examples={args['examples']}"
  prior = named(f"-log{BATCH}", -math.log(BATCH))
  points = [{"model.bias_init": b, "model.temperature_init": t}
            for b, t in ((-10.0, 10.0), (None, 10.0), (0.0, 10.0), (-10.0, 1.0), (0.0, 1.0),
                         (prior, 10.0))]
  return Sweep(
      config=config, base={"batch_size": BATCH}, points=points,
      seeds=tuple(range(int(args.get("seeds", 3)))), seed_keys=("seed", "input.data.seed"),
      metrics=METRICS, plot_x="model.bias_init",
      description="SigLIP Table 4 at laptop scale: initial bias b and temperature t = exp(t') "
                  "of the sigmoid loss, batch 128 on shapes. Published (ImageNet 0-shot, B/16, "
                  "batch 8k): b=-10,t=10: 63.0; no b,t=10: 62.0; b=0,t=10: 61.7; b=-10,t=1: "
                  "61.0; b=0,t=1: 53.7. b=-log128 is the prior of a positive pair at batch 128.")
