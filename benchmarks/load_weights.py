"""Times `weights.load_params` on B/16-sized two-tower checkpoints against the model's init.

  python benchmarks/load_weights.py [--repeats 3] [--dir /tmp/load_weights] [--only NAME ...]

Writes (and afterwards deletes) random checkpoints of the same sizes as the released models: SigLIP B/16 at 224 px
(big_vision .npz), OpenAI CLIP ViT-B/16 (open_clip .safetensors) and SigLIP 2 B/16 at 224 px
(a Hugging Face SiglipModel directory, Gemma's 256k vocabulary), then times loading each
into its model config (all conversions included), a load at 384 px (position embeddings
resampled), and `jax.jit(model.init)` (compilation included, then a second, compiled call).
"""

import argparse
import os
import shutil
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from big_vision_lite import pytree, weights  # pylint: disable=wrong-import-position
from big_vision_lite.models.two_towers import TwoTowers  # pylint: disable=wrong-import-position

SIGLIP_B16 = dict(
    image=dict(variant="B/16", image_size=224, pool_type="map"),
    text=dict(variant="B", vocab_size=32_000, max_len=64),
    out_dim=768, temperature_init=10., bias_init=-10.)
CLIP_B16 = dict(
    image=dict(variant="B/16", image_size=224, pool_type="tok", posemb_cls=True, ln_pre=True,
               patch_bias=False, head_bias=False, act="quick_gelu", ln_eps=1e-5),
    text=dict(width=512, depth=12, mlp_dim=2048, num_heads=8, vocab_size=49_408, max_len=77,
              causal=True, pool_type="argmax", head_bias=False, act="quick_gelu", ln_eps=1e-5),
    out_dim=512, temperature_init=1 / 0.07, bias_init=None)
SIGLIP2_B16 = dict(
    image=dict(variant="B/16", image_size=224, pool_type="map"),
    text=dict(variant="B", vocab_size=256_000, max_len=64),
    out_dim=(None, 768), temperature_init=10., bias_init=-10.)
MODELS = {"SigLIP B/16": (SIGLIP_B16, "npz"), "CLIP ViT-B/16": (CLIP_B16, "safetensors"),
          "SigLIP 2 B/16": (SIGLIP2_B16, "hf")}


def _random_params(config):
  model = TwoTowers(**config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())["params"]
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)


def _time(fn, repeats: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--dir", default="/tmp/load_weights")
  p.add_argument("--only", nargs="*", choices=list(MODELS), default=list(MODELS))
  args = p.parse_args()
  os.makedirs(args.dir, exist_ok=True)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; median of {args.repeats}")
  for name in args.only:
    config, fmt = MODELS[name]
    params = _random_params(config)
    count = sum(x.size for x in jax.tree.leaves(params))
    path = os.path.join(args.dir, f"{name.replace('/', '').replace(' ', '_')}.{fmt}")
    weights.export(params, config, path, fmt)
    size = os.path.getsize(os.path.join(path, "model.safetensors") if fmt == "hf" else path)
    size /= 2 ** 20
    load, _ = _time(lambda: weights.load_params(path, config), args.repeats)  # pylint: disable=cell-var-from-loop
    loaded = weights.load_params(path, config)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in
               zip(pytree.named_leaves(params), pytree.named_leaves(loaded)))
    hi_res = dict(config, image=dict(config["image"], image_size=384))
    resample, _ = _time(lambda: weights.load_params(path, hi_res), args.repeats)  # pylint: disable=cell-var-from-loop
    model = TwoTowers(**config)
    init = jax.jit(model.init)
    inputs = model.example_inputs()
    first, _ = _time(lambda: init(jax.random.key(0), *inputs), 1)  # pylint: disable=cell-var-from-loop
    again, _ = _time(lambda: init(jax.random.key(1), *inputs), args.repeats)  # pylint: disable=cell-var-from-loop
    print(f"{name} ({count / 1e6:.1f}M parameters, {fmt} {size:.0f} MiB): load_params "
          f"{load:.2f} s, at 384 px {resample:.2f} s | jit(init) {first:.2f} s first call "
          f"(compiling), {again:.2f} s compiled")
    if fmt == "hf":
      shutil.rmtree(path)
    else:
      os.remove(path)


if __name__ == "__main__":
  main()
