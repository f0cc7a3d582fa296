"""Prints images/s of decode + augment + tokenize at 224 px from tar shards of real JPEGs.

  python benchmarks/input_pipeline.py [--workers 0,1,2] [--images 1024] [--size 224]

Writes shards of ~400x300 JPEGs (drawn scenes with texture, quality 90) to a temporary folder,
then runs the training pipeline (GrainInput: tar source -> per-example ops -> local batches)
with each worker count. 0 workers preprocesses in the calling process.
"""

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

from big_vision_lite.data import loader, shapes
from big_vision_lite.tools import make_shards


def jpeg(index: int) -> bytes:
  """A 400x300 JPEG: a drawn scene plus smooth colour texture, so the codec has real work."""
  base = shapes.draw(0, "test", index, image_size=400)["image"][50:350].astype(np.float32)
  yy, xx = np.mgrid[:300, :400]
  texture = 30 * np.sin(xx / (7 + index % 5))[..., None] * np.cos(yy / 11)[..., None]
  img = np.clip(base + texture + np.random.default_rng(index).normal(0, 8, base.shape), 0, 255)
  buf = io.BytesIO()
  Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=90)
  return buf.getvalue()


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workers", default="0,1,2")
  p.add_argument("--images", type=int, default=1024)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--value_range", default="value_range(-1,1)|", help="set to '' for uint8 output")
  args = p.parse_args()
  pp = (f"decode|inception_crop({args.size})|flip_lr|{args.value_range}"
        "choice(inkey='captions',outkey='text')|tokenize(max_len=64,inkey='text',outkey='labels')|"
        "keep('image','labels')")
  with tempfile.TemporaryDirectory() as tmp:
    samples = ((f"{i:06d}", jpeg(i), "jpg", shapes.draw(0, "test", i, 16)["captions"])
               for i in range(256))
    make_shards.write_shards(samples, tmp, samples_per_shard=64)
    size_kb = np.mean([os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)]) / 64 / 1024
    print(f"source: 256 distinct 400x300 JPEGs (~{size_kb:.0f} KiB each) in 4 shards; "
          f"pipeline: {pp}; {os.cpu_count()} CPU cores")
    for workers in (int(w) for w in args.workers.split(",")):
      it = loader.GrainInput(data={"name": "tar", "pattern": tmp}, pp=pp, global_batch=args.batch,
                             num_workers=workers, process_index=0, process_count=1)
      for _ in range(3):  # warm-up: worker start-up, first reads
        next(it)
      n = max(1, args.images // args.batch)
      start = time.perf_counter()
      for _ in range(n):
        next(it)
      rate = n * args.batch / (time.perf_counter() - start)
      it.close()
      per_core = rate / max(workers, 1)
      print(f"workers {workers}: {rate:7.0f} img/s ({per_core:.0f} img/s per busy process)")


if __name__ == "__main__":
  main()
