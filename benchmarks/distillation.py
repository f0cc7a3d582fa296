"""SigLIP 2's self-distillation terms: what they cost.

  python benchmarks/distillation.py time     # CPU step time, shapes recipe vs SigLIP alone
  python benchmarks/distillation.py phases   # CPU step time before / after SILC and TIPS start
  python benchmarks/distillation.py flops    # XLA FLOPs of the B/16 step, recipe vs SigLIP
  python benchmarks/distillation.py memory   # the EMA teacher's bytes at B/16 and So400m/16 (256 px)

`time` runs configs/siglip2_shapes.py with every term on from step 0 (the cost of the last 20%
of training, when SILC and TIPS run), SigLIP alone (objectives={'contrastive'}), and the recipe
with fewer local views, on random data placed on the device once. `flops` lowers the B/16 update
step (configs/siglip_b16_shapes.py with the recipe's terms at B's weights and DINO's head) for the
CPU and reads XLA's cost analysis; nothing runs. `memory` counts the teacher's parameters from
the abstract train state.
"""

import argparse
import os
import sys

import jax
import numpy as np

from big_vision_lite import config as config_lib
from big_vision_lite import sharding, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_timing  # noqa: E402  benchmarks/step_timing.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGLIP = "--config.objectives={'contrastive': {}}"


def _recipe(extra=(), start: float = 0.0) -> list[str]:
  """Overrides that start the shapes recipe's SILC and TIPS at `start` (every other term at 0)."""
  recipe = config_lib.load(os.path.join(ROOT, "configs", "siglip2_shapes.py"))
  terms = {k: {**v, "start": start if k in ("silc", "tips") else 0.0}
           for k, v in recipe.objectives.to_dict().items()}
  return [f"--config.objectives={terms!r}", *extra]


def _batch(cfg, mesh):
  rng = np.random.default_rng(0)
  out = {}
  for key, a in train.abstract_batch(cfg, mesh).items():
    if key == "image":
      x = rng.uniform(-1, 1, a.shape)
    elif np.issubdtype(a.dtype, np.integer):
      x = rng.integers(1, cfg.model.text.vocab_size, a.shape)
    elif key == "region_box":
      x = np.sort(rng.uniform(0, 1, a.shape), axis=-1)[..., [0, 2, 1, 3]]
    else:
      x = np.ones(a.shape)
    out[key] = jax.device_put(x.astype(a.dtype), a.sharding)
  return out


def step_time(spec: str, overrides: list[str], steps: int) -> float:
  cfg = config_lib.from_args(spec, overrides + ["--config.evals={}"])
  mesh = sharding.make_mesh(cfg.mesh)
  _, abstract_state, init_fn, update, _ = train.build(cfg, mesh, 100)
  seconds, _ = step_timing.time_steps(update, init_fn(jax.random.key(0)), _batch(cfg, mesh),
                                      steps)
  return seconds


def phase_times(start: float, steps: int) -> tuple[float, float]:
  """Seconds per step before and after SILC and TIPS start (the recipe built for 10 steps)."""
  cfg = config_lib.from_args(os.path.join(ROOT, "configs", "siglip2_shapes.py"),
                             _recipe(start=start) + ["--config.evals={}"])
  mesh = sharding.make_mesh(cfg.mesh)
  _, _, init_fn, update, _ = train.build(cfg, mesh, 10)
  batch = _batch(cfg, mesh)
  state = init_fn(jax.random.key(0))
  steps = min(steps, 3)  # Steps 2-4 before a start at 5; 7-9 after it (the first two warm up).
  before, state = step_timing.time_steps(update, state, batch, steps)
  after, _ = step_timing.time_steps(update, state, batch, steps)
  return before, after


def flops(spec: str, overrides: list[str], batch: int) -> float:
  cfg = config_lib.from_args(spec, overrides + ["--config.evals={}",
                                                f"--config.batch_size={batch}"])
  mesh = sharding.make_mesh(cfg.mesh)
  _, abstract_state, _, update, _ = train.build(cfg, mesh, 100)
  return float(update.lower(abstract_state, train.abstract_batch(cfg, mesh))
               .cost_analysis()["flops"])


def teacher_bytes(overrides: list[str]) -> tuple[int, int, int]:
  """(teacher bytes, of which the image tower, all parameters' bytes)."""
  cfg = config_lib.from_args(os.path.join(ROOT, "configs", "siglip_b16_shapes.py"),
                             overrides + ["--config.evals={}"])
  mesh = sharding.make_mesh(cfg.mesh)
  _, abstract_state, _, _, _ = train.build(cfg, mesh, 100)
  size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  teacher = abstract_state["teacher"]
  return size(teacher), size(teacher["img"]), size(abstract_state["params"])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("what", choices=("time", "phases", "flops", "memory"))
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--batch", type=int, default=256, help="global batch of the FLOPs count")
  args = p.parse_args()
  shapes = os.path.join(ROOT, "configs", "siglip2_shapes.py")
  b16 = os.path.join(ROOT, "configs", "siglip_b16_shapes.py")
  head = "'head_dim': 65536, 'head_hidden': 2048, 'head_bottleneck': 256"
  b16_recipe = [
      "--config.objectives={'contrastive': {}, 'locca': {}, "
      f"'silc': {{'weight': 0.25, {head}}}, 'tips': {{'weight': 0.0625, {head}}}}}",
      "--config.teacher.local_size=96"]
  if args.what == "time":
    base = step_time(shapes, [SIGLIP], args.steps)
    print(f"SigLIP alone: {base * 1e3:.0f} ms/step")
    for name, extra in (("+ LocCa", ["--config.objectives={'contrastive': {}, 'locca': {}}"]),):
      t = step_time(shapes, extra, args.steps)
      print(f"{name}: {t * 1e3:.0f} ms/step ({t / base:.2f}x)")
    for views in (8, 4, 1):
      t = step_time(shapes, _recipe([f"--config.teacher.local_views={views}"]),
                    args.steps)
      print(f"recipe, {views} local views: {t * 1e3:.0f} ms/step ({t / base:.2f}x SigLIP)")
  elif args.what == "phases":
    before, after = phase_times(0.5, args.steps)
    _, every = phase_times(0.0, args.steps)
    print(f"recipe, SILC and TIPS from step 5 of 10: {before * 1e3:.0f} ms/step before their "
          f"start, {after * 1e3:.0f} ms/step after it; every term from step 0: "
          f"{every * 1e3:.0f} ms/step")
  elif args.what == "flops":
    base = flops(b16, [SIGLIP], args.batch)
    print(f"B/16 at 224 px, batch {args.batch}: SigLIP {base / 1e12:.2f} TFLOP/step")
    for name, extra in (
        ("+ LocCa", ["--config.objectives={'contrastive': {}, 'locca': {}}"]),
        ("recipe (LocCa, SILC 8 local views at 96 px, TIPS)", b16_recipe),
        ("recipe without SILC", [b16_recipe[0].replace(
            f"'silc': {{'weight': 0.25, {head}}}, ", ""), b16_recipe[1]])):
      f = flops(b16, extra, args.batch)
      print(f"{name}: {f / 1e12:.2f} TFLOP/step ({f / base:.2f}x)")
  else:
    at256 = ["--config.model.image.image_size=256", "--config.teacher.local_size=112"]
    for name, extra in (("B/16 at 256 px", []), (
        "So400m/16 at 256 px", ["--config.model.image.variant=So400m/16",
                                "--config.model.text.variant=So400m",
                                "--config.model.out_dim=1152"])):
      total, img, params = teacher_bytes(b16_recipe + at256 + extra)
      print(f"{name}: teacher {total / 2**20:.0f} MiB (image tower {img / 2**20:.0f} MiB, heads "
            f"{(total - img) / 2**20:.0f} MiB); all parameters {params / 2**20:.0f} MiB")


if __name__ == "__main__":
  main()
