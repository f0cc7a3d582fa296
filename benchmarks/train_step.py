"""Prints step time, img/s and MFU of the update step for a config, on synthetic data.

  python benchmarks/train_step.py --config configs/siglip_b16_shapes.py --batch_size 256
  python benchmarks/train_step.py --config configs/siglip_shapes.py --config.model.dtype_mm=bfloat16
  python benchmarks/train_step.py --config benchmarks/anchors.py --compare_plain --rounds 3 --steps 20

Random images and token ids are placed on the devices once, so the input pipeline is not
measured. MFU uses model FLOPs from XLA's cost analysis of the plain step (see train.py) and
the device's peak bf16 FLOP/s (metrics.PEAK_BF16_FLOPS); --peak_tflops overrides the peak.

--compare_plain also times the plain step (loss, gradient, optimiser: step_timing.plain_update)
in interleaved rounds with the trainer's step (plus its non-finite guard, gradient-norm metric
and metrics) and prints both medians, their ratio, and the whole-buffer copies in each compiled
step: what the trainer's bookkeeping costs.
"""

import argparse

import jax
import numpy as np

from big_vision_lite import config as config_lib
from big_vision_lite import metrics, sharding, train
import step_timing  # benchmarks/step_timing.py


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/siglip_shapes.py")
  p.add_argument("--batch_size", type=int, default=None, help="global batch (default: config's)")
  p.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up steps")
  p.add_argument("--peak_tflops", type=float, default=None, help="per-device peak, bf16 dense")
  p.add_argument("--compare_plain", action="store_true",
                 help="also time the plain step, interleaved, and print the ratio")
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (--compare_plain)")
  args, rest = p.parse_known_args()
  cfg = config_lib.from_args(args.config, rest,
                             {"batch_size": args.batch_size} if args.batch_size else None)
  mesh = sharding.make_mesh(cfg.mesh)
  config_lib.validate(cfg, mesh.devices.size)

  total_steps, warmup_steps, _ = config_lib.durations(cfg)
  _, abstract_state, init_fn, update, _ = train.build(cfg, mesh, total_steps, warmup_steps)
  update, flops = train.compile_update(cfg, mesh, update, abstract_state)
  batch = step_timing.random_batch(cfg, mesh)
  state = init_fn(jax.random.key(0))
  if args.compare_plain:
    plain, plain_abstract, plain_init = step_timing.plain_update(cfg, mesh, total_steps,
                                                                 warmup_steps)
    plain = plain.lower(plain_abstract, train.abstract_batch(cfg, mesh)).compile()
    times = step_timing.time_interleaved(
        {"plain": (plain, plain_init(jax.random.key(0))), "trainer": (update, state)}, batch,
        args.rounds, args.steps)
    plain_time, step_time = (float(np.median(times[k])) for k in ("plain", "trainer"))
    rounds = lambda k: ", ".join(f"{t * 1e3:.1f}" for t in times[k])
    copies = {k: step_timing.entry_copies(c) for k, c in (("plain", plain), ("trainer", update))}
    print(f"plain step (loss, gradient, optimiser): median {plain_time * 1e3:.1f} ms "
          f"(rounds: {rounds('plain')}); {copies['plain'][0]} copies of "
          f"{copies['plain'][1]:,} elements")
    print(f"trainer's step (+ non-finite guard, gradient norm, metrics): median "
          f"{step_time * 1e3:.1f} ms (rounds: {rounds('trainer')}); {copies['trainer'][0]} "
          f"copies of {copies['trainer'][1]:,} elements")
    print(f"ratio trainer / plain: {step_time / plain_time:.3f} "
          f"({args.rounds} interleaved rounds of {args.steps} steps)")
  else:
    step_time, _ = step_timing.time_steps(update, state, batch, args.steps)

  n = jax.device_count()
  kind = jax.devices()[0].device_kind
  peak = args.peak_tflops * 1e12 if args.peak_tflops else metrics.peak_flops(kind)
  util = metrics.utilisation(flops, step_time, n, peak)
  params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  print(f"device: {n} x {kind}; model {params / 1e6:.1f}M params; loss {cfg.loss}; "
        f"dtype_mm {cfg.model.dtype_mm}; batch {cfg.batch_size}")
  print(f"step time {step_time * 1e3:.1f} ms | {cfg.batch_size / step_time:.0f} img/s | "
        f"{cfg.batch_size / step_time / n:.0f} img/s/device | model {flops / 1e12:.3f} TFLOP/step | "
        f"{util['tflops_per_device']:.2f} TFLOP/s/device | "
        + (f"MFU {util['mfu']:.1%}" if "mfu" in util else "MFU n/a (unknown peak; --peak_tflops)"))


if __name__ == "__main__":
  main()
