"""Prints per-device peak memory of the loss forward+backward for 1, 2, 4, 8 devices.

  python benchmarks/loss_memory.py [--per_device_batch 1024] [--dim 512]

The per-device batch is fixed, so the global batch grows with the device count. Memory is XLA's
compiled memory analysis (temporaries + arguments + outputs of the per-device program) of
`jax.value_and_grad` of each loss; nothing runs, so 8 simulated CPU devices suffice.
"""

import argparse
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from big_vision_lite import losses, sharding  # noqa: E402


def peak_bytes(name: str, num_devices: int, per_device_batch: int, dim: int) -> int:
  mesh = sharding.make_mesh(devices=jax.devices()[:num_devices])
  fn = losses.make_loss(name, mesh)
  emb = jax.ShapeDtypeStruct((per_device_batch * num_devices, dim), jnp.float32,
                             sharding=NamedSharding(mesh, P("data")))
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  grad = jax.jit(jax.value_and_grad(lambda *a: fn(*a)[0], argnums=(0, 1, 2, 3)))
  mem = grad.lower(emb, emb, scalar, scalar).compile().memory_analysis()
  return mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--per_device_batch", type=int, default=1024)
  p.add_argument("--dim", type=int, default=512)
  args = p.parse_args()
  counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
  print(f"per-device peak memory (MiB), loss forward+backward, per-device batch "
        f"{args.per_device_batch}, embedding dim {args.dim}")
  print(f"| loss | " + " | ".join(f"{n} dev" for n in counts) + " |")
  print("|---|" + "---|" * len(counts))
  for name in losses.NAMES:
    row = [peak_bytes(name, n, args.per_device_batch, args.dim) / 2**20 for n in counts]
    print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + " |")


if __name__ == "__main__":
  main()
