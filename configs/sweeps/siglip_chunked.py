"""The ring-chunked sigmoid loss against the all-gather one, on 4 simulated CPU devices so that
the ring really runs (text blocks travel around 4 devices): the two compute the same loss and
gradients, so the training curves must coincide, up to float32 summation order.

  python -m big_vision_lite.sweep configs/sweeps/siglip_chunked.py \\
    --workdir workdirs/ablations/chunked --parallel 2
  python -m big_vision_lite.sweep.report workdirs/ablations/chunked --out docs/ablations/chunked

Every run gets XLA_FLAGS=--xla_force_host_platform_device_count=4 (the sweep's `env`), so the
batch of 128 is split 32 per device. Argument: `examples=N` (default 32000: 250 steps, as the
point is agreement, not accuracy), `seeds=K` (default 3).
"""

import os

from big_vision_lite import config as config_lib
from big_vision_lite.sweep import Sweep, product

DEVICES = 4


def get_sweep(arg: str | None = None) -> Sweep:
  args = config_lib.parse_arg(arg, {"examples", "seeds"}, "configs/sweeps/siglip_chunked.py")
  config = os.path.join(os.path.dirname(__file__), "shapes_ablation.py")
  config += f":examples={args.get('examples', 32_000)}"
  return Sweep(
      config=config, base={"batch_size": 128}, points=product(loss=["sigmoid", "sigmoid_chunked"]),
      seeds=tuple(range(int(args.get("seeds", 3)))), seed_keys=("seed", "input.data.seed"),
      env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}"},
      metrics=("train/loss", "zeroshot/shapes_shape/top1", "retrieval/shapes/img2txt_r@1"),
      description=f"Chunked (ring over {DEVICES} simulated devices) vs all-gather sigmoid loss: "
                  "the same function, so the same curves up to float32 rounding.")
