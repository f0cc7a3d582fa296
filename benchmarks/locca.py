"""Prints what LocCa costs: the CPU step time of configs/siglip2_shapes.py with and without the
decoder, XLA's FLOP count of the B/16 update step (configs/siglip2_b16.py) with and without it,
and the compiled memory of the decoder's cross-entropy at a 256k vocabulary, plain vs chunked.

  python benchmarks/locca.py [--steps 10] [--b16_batch 8] [--tokens 6528]
"""

import argparse

import jax
import jax.numpy as jnp

from big_vision_lite import config as config_lib
from big_vision_lite import sharding, train
from big_vision_lite.models import decoder
import step_timing  # benchmarks/step_timing.py

SIGLIP = "--config.objectives={'contrastive': {}}"


def step_time(spec: str, steps: int, *overrides: str) -> float:
  cfg = config_lib.from_args(spec, list(overrides) + ["--config.evals={}"])
  mesh = sharding.make_mesh(cfg.mesh)
  _, abstract_state, init_fn, update, _ = train.build(cfg, mesh, 100)
  seconds, _ = step_timing.time_steps(update, init_fn(jax.random.key(0)),
                                      step_timing.random_batch(cfg, mesh), steps)
  return seconds


def b16_flops(batch: int, *overrides: str) -> float:
  spec = "configs/siglip2_b16.py:shards=/none/s-{0..1}.tar,tokenizer=/none/gemma.model"
  cfg = config_lib.from_args(spec, [f"--config.batch_size={batch}", *overrides])
  return train.model_flops_per_step(cfg, sharding.make_mesh(devices=jax.devices()[:1]))


def loss_memory(tokens: int, vocab: int, width: int, chunk: int | None) -> int:
  """Temporary bytes of the compiled gradient (w.r.t. hidden states and head) of the summed
  token cross-entropy."""
  head = {"kernel": jax.ShapeDtypeStruct((width, vocab), jnp.float32),
          "bias": jax.ShapeDtypeStruct((vocab,), jnp.float32)}
  h = jax.ShapeDtypeStruct((tokens, width), jnp.float32)
  t = jax.ShapeDtypeStruct((tokens,), jnp.int32)
  loss = lambda hd, x, y: jnp.sum(decoder.cross_entropy(hd, x, y, chunk))
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(head, h, t).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--b16_batch", type=int, default=8)
  p.add_argument("--tokens", type=int, default=32 * (2 * 64 + 4),
                 help="decoder target tokens per device: 32 examples x (2 x 64 + 4), the "
                 "positions of the three tasks that predict a target")
  p.add_argument("--chunk", type=int, default=1024)
  args = p.parse_args()
  print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind}")
  base = step_time("configs/siglip2_shapes.py", args.steps, SIGLIP)
  locca = step_time("configs/siglip2_shapes.py", args.steps)
  print(f"siglip2_shapes step (batch 128): SigLIP {base * 1e3:.0f} ms, SigLIP + LocCa "
        f"{locca * 1e3:.0f} ms, ratio {locca / base:.2f}")
  f0 = b16_flops(args.b16_batch, SIGLIP) / args.b16_batch
  f1 = b16_flops(args.b16_batch) / args.b16_batch
  print(f"B/16 at 256 px, 64 tokens, 256k vocabulary: {f0 / 1e9:.1f} GFLOP per example per "
        f"step without the decoder, {f1 / 1e9:.1f} with it (ratio {f1 / f0:.2f})")
  for chunk in (None, args.chunk):
    mib = loss_memory(args.tokens, 256_000, 768, chunk) / 2**20
    print(f"decoder cross-entropy gradient, {args.tokens} tokens x 256k vocabulary x 768: "
          f"{'plain' if chunk is None else f'chunks of {chunk}'}: {mib:.0f} MiB temporary")


if __name__ == "__main__":
  main()
