"""Update-step time of the NaFlex ViT vs the square ViT at the same token count, and the share
of the position-embedding resize in it.

  python benchmarks/naflex_step.py [--config configs/siglip_shapes.py] [--size 128] [--steps 10]

The square model takes size x size images; the NaFlex model the same number of patches
((size / P)^2, input.seq_lengths=(that,)) as images of a non-square grid (rows x columns
with rows * columns = the token count where it factors so, e.g. 4 x 16 for 64), no padding.
Both on synthetic data placed on the devices once. The resize share is the NaFlex position
embedding alone (vit.naflex_posemb: per-image resize weights and the gather, forward and
backward) timed at the same batch and length, divided by the NaFlex step time. Rounds
alternate square and NaFlex so that both see the same machine load; the minimum over rounds
is reported.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from big_vision_lite import config as config_lib
from big_vision_lite import sharding, train
from big_vision_lite.models import vit
import step_timing  # benchmarks/step_timing.py


def _grid(tokens: int) -> tuple[int, int]:
  """A non-square rows x columns factorisation of `tokens` (about 1:4), or square."""
  rows = max(r for r in range(1, int(np.sqrt(tokens)) + 1) if tokens % r == 0 and
             r <= max(1, int(np.sqrt(tokens / 4))))
  return rows, tokens // rows


def naflex_batch(cfg, mesh, tokens: int) -> dict:
  abstract = train.abstract_batch(cfg, mesh, tokens)
  rng = np.random.default_rng(0)
  rows, cols = _grid(tokens)
  y, x = np.divmod(np.arange(tokens, dtype=np.int32), cols)
  n = cfg.batch_size
  host = {"image": {"patches": rng.uniform(-1, 1, abstract["image"]["patches"].shape)
                    .astype(np.float32),
                    "yidx": np.tile(y, (n, 1)), "xidx": np.tile(x, (n, 1)),
                    "mask": np.ones((n, tokens), bool)},
          "labels": rng.integers(1, cfg.model.text.vocab_size,
                                 abstract["labels"].shape).astype(np.int32)}
  return jax.tree.map(lambda v, a: jax.device_put(v, a.sharding), host, abstract)


def step_time(cfg, mesh, batch, steps: int) -> float:
  total_steps, warmup_steps, _ = config_lib.durations(cfg)
  _, abstract_state, init_fn, update, _ = train.build(cfg, mesh, total_steps, warmup_steps)
  seq = batch["image"]["patches"].shape[1] if isinstance(batch["image"], dict) else None
  update, _ = train.compile_update(cfg, mesh, update, abstract_state, seq)
  seconds, _ = step_timing.time_steps(update, init_fn(jax.random.key(0)), batch, steps)
  return seconds


def posemb_time(batch, grid: int, width: int, steps: int) -> float:
  """Seconds for the position embedding's forward and backward (gradient w.r.t. the grid)."""
  image = batch["image"]
  pos = jnp.asarray(np.random.default_rng(0).normal(size=(grid, grid, width)), jnp.float32)
  cot = jnp.ones((*image["yidx"].shape, width), jnp.float32)
  fn = jax.jit(jax.grad(lambda p: jnp.vdot(
      vit.naflex_posemb(p, image["yidx"], image["xidx"], image["mask"]), cot)))
  jax.block_until_ready(fn(pos))
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(pos)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/siglip_shapes.py")
  p.add_argument("--size", type=int, default=128, help="square image side (pixels)")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  args, rest = p.parse_known_args()
  square = config_lib.from_args(args.config, rest + [f"--config.model.image.image_size={args.size}",
                                                     "--config.evals={}"])
  patch = vit.ViT(**{k: v for k, v in square.model.image.to_dict().items()
                               if k != "type"}).hparams()["patch_size"][0]
  tokens = (args.size // patch) ** 2
  naflex = config_lib.from_args(args.config, rest + [
      f"--config.model.image.image_size={args.size}", "--config.evals={}",
      "--config.model.image.naflex=True", f"--config.input.seq_lengths=({tokens},)"])
  mesh = sharding.make_mesh(square.mesh)
  sq_batch = step_timing.random_batch(square, mesh)
  nf_batch = naflex_batch(naflex, mesh, tokens)
  times = {"square": [], "naflex": [], "posemb": []}
  for _ in range(args.rounds):
    times["square"].append(step_time(square, mesh, sq_batch, args.steps))
    times["naflex"].append(step_time(naflex, mesh, nf_batch, args.steps))
    width = vit.ViT(**{k: v for k, v in naflex.model.image.to_dict().items()
                                 if k != "type"}).hparams()["width"]
    times["posemb"].append(posemb_time(nf_batch, naflex.model.image.posemb_grid, width,
                                       args.steps))
  best = {k: min(v) for k, v in times.items()}
  rows, cols = _grid(tokens)
  print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind}; batch "
        f"{square.batch_size}; {tokens} tokens (square {args.size} px, NaFlex grid {rows} x "
        f"{cols}); min over {args.rounds} rounds of {args.steps} steps")
  print(f"square step {best['square'] * 1e3:.1f} ms | NaFlex step {best['naflex'] * 1e3:.1f} ms "
        f"({best['naflex'] / best['square'] - 1:+.1%}) | position-embedding resize "
        f"{best['posemb'] * 1e3:.2f} ms ({best['posemb'] / best['naflex']:.1%} of the NaFlex step)")
  print("all rounds (ms):", {k: [round(t * 1e3, 1) for t in v] for k, v in times.items()})


if __name__ == "__main__":
  main()
