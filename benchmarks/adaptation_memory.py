"""Per-device memory and step time of the update step: full training against frozen parts and LoRA.

  python benchmarks/adaptation_memory.py --config configs/siglip_shapes.py --steps 20
  python benchmarks/adaptation_memory.py --config configs/siglip_b16_shapes.py --batch_size 256 --steps 0

For each regime the update step is compiled for the config's model and batch: XLA's memory
analysis of the compiled program (arguments + outputs - donated + temporaries, per device) and
its FLOPs, then `--steps` timed steps on random data (0: compile only, for models too large to
time on this machine). Regimes: full training; LiT (image tower frozen); the image tower frozen
but its last block (`last block`); LoRA rank 16 on both towers (the rest frozen).
"""

import argparse

import jax

from big_vision_lite import config as config_lib
from big_vision_lite import metrics, pytree, sharding, train
import step_timing  # benchmarks/step_timing.py

REGIMES = {
    "full": {},
    "LiT (image tower frozen)": {"frozen": ("img/.*",)},
    "last block + heads": {"frozen": ("img/(embedding|pos_embedding)(/.*)?",
                                      "img/Transformer/encoderblock_(?!{last}/).*",
                                      "txt/(Embed_0|pos_embedding)(/.*)?",
                                      "txt/Encoder_0/encoderblock_(?!{last_txt}/).*")},
    "LoRA r=16 (rest frozen)": {"lora": {"rank": 16, "alpha": 32.0}},
}


def _overrides(regime: dict, cfg) -> dict:
  """The regime's config overrides, with the towers' last block numbers filled in."""
  out = {}
  for key, value in regime.items():
    if key == "frozen":
      out[key] = tuple(r.format(last=_depth(cfg, "image") - 1, last_txt=_depth(cfg, "text") - 1)
                       for r in value)
    else:
      out[key] = value
  return out


def _depth(cfg, tower: str) -> int:
  from big_vision_lite.models.vit import decode_variant  # pylint: disable=import-outside-toplevel
  t = cfg.model[tower]
  return t.get("depth") or decode_variant(t.get("variant"))["depth"]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/siglip_shapes.py")
  p.add_argument("--batch_size", type=int, default=None)
  p.add_argument("--steps", type=int, default=20, help="timed steps (0: memory only)")
  args, rest = p.parse_known_args()
  base = config_lib.from_args(args.config, rest,
                              {"batch_size": args.batch_size} if args.batch_size else None)
  mesh = sharding.make_mesh(base.mesh)
  print(f"{args.config}: batch {base.batch_size}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}")
  print(f"{'regime':28s} {'trainable':>12s} {'memory/device':>14s} {'GFLOP/step':>11s} "
        f"{'step time':>10s}")
  for name, regime in REGIMES.items():
    cfg = config_lib.from_args(args.config, rest, {
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        **_overrides(regime, base)})
    _, abstract_state, init_fn, update, mask = train.build(cfg, mesh, 100)
    compiled = update.lower(abstract_state, train.abstract_batch(cfg, mesh)).compile()
    memory = metrics.compiled_memory(compiled) / 2**20
    flops = compiled.cost_analysis()["flops"]
    trainable = sum(x.size for x in jax.tree.leaves(pytree.partition(abstract_state["params"],
                                                                     mask)[0]))
    step = "-"
    if args.steps:
      seconds, _ = step_timing.time_steps(compiled, init_fn(jax.random.key(0)),
                                          step_timing.random_batch(cfg, mesh), args.steps)
      step = f"{seconds * 1e3:.0f} ms"
    print(f"{name:28s} {trainable / 1e6:11.2f}M {memory:11.1f} MiB {flops / 1e9:11.1f} "
          f"{step:>10s}", flush=True)


if __name__ == "__main__":
  main()
