"""Prints step time, img/s and MFU of the update step for a config, on synthetic data.

  python benchmarks/train_step.py --config configs/siglip_b16_shapes.py --batch_size 256
  python benchmarks/train_step.py --config configs/siglip_shapes.py --config.model.dtype_mm=bfloat16

Random images and token ids are placed on the devices once, so the input pipeline is not
measured. MFU uses model FLOPs from XLA's cost analysis of the plain step (see train.py) and
the device's peak bf16 FLOP/s (metrics.PEAK_BF16_FLOPS); --peak_tflops overrides the peak.
"""

import argparse

import jax

from big_vision_lite import config as config_lib
from big_vision_lite import metrics, sharding, train
import step_timing  # benchmarks/step_timing.py


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/siglip_shapes.py")
  p.add_argument("--batch_size", type=int, default=None, help="global batch (default: config's)")
  p.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up steps")
  p.add_argument("--peak_tflops", type=float, default=None, help="per-device peak, bf16 dense")
  args, rest = p.parse_known_args()
  cfg = config_lib.from_args(args.config, rest,
                             {"batch_size": args.batch_size} if args.batch_size else None)
  mesh = sharding.make_mesh(cfg.mesh)
  config_lib.validate(cfg, mesh.devices.size)

  total_steps, warmup_steps, _ = config_lib.durations(cfg)
  _, abstract_state, init_fn, update, _ = train.build(cfg, mesh, total_steps, warmup_steps)
  update, flops = train.compile_update(cfg, mesh, update, abstract_state)
  step_time, state = step_timing.time_steps(update, init_fn(jax.random.key(0)),
                                            step_timing.random_batch(cfg, mesh), args.steps)

  n = jax.device_count()
  kind = jax.devices()[0].device_kind
  peak = args.peak_tflops * 1e12 if args.peak_tflops else metrics.peak_flops(kind)
  util = metrics.utilisation(flops, step_time, n, peak)
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  print(f"device: {n} x {kind}; model {params / 1e6:.1f}M params; loss {cfg.loss}; "
        f"dtype_mm {cfg.model.dtype_mm}; batch {cfg.batch_size}")
  print(f"step time {step_time * 1e3:.1f} ms | {cfg.batch_size / step_time:.0f} img/s | "
        f"{cfg.batch_size / step_time / n:.0f} img/s/device | model {flops / 1e12:.3f} TFLOP/step | "
        f"{util['tflops_per_device']:.2f} TFLOP/s/device | "
        + (f"MFU {util['mfu']:.1%}" if "mfu" in util else "MFU n/a (unknown peak; --peak_tflops)"))


if __name__ == "__main__":
  main()
