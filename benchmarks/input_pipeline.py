"""Prints images/s of decode + augment + tokenize at 224 px from tar shards of real JPEGs.

  python benchmarks/input_pipeline.py [--workers 0,1,2] [--images 1024] [--size 224] [--s3]

Writes shards of ~400x300 JPEGs (drawn scenes with texture, quality 90) to a temporary folder,
then runs the training pipeline (GrainInput: tar source -> per-example ops -> local batches)
with each worker count. 0 workers preprocesses in the calling process. With --s3 the shards are
also put on an S3 server started on loopback (moto's, from the test extra; a Python server, so
it bounds the rate: this checks the read pattern, not S3's speed) and read from there
(index built into a temporary cache, one ranged GET per sample), counting the reads.
"""

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from big_vision_lite.data import loader, shapes, shard_index, sources
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
  p.add_argument("--s3", action="store_true", help="also read the shards from a loopback S3")
  args = p.parse_args()
  pp = (f"decode|inception_crop({args.size})|flip_lr|{args.value_range}"
        "choice(inkey='captions',outkey='text')|tokenize(max_len=64,inkey='text',outkey='labels')|"
        "keep('image','labels')")
  with tempfile.TemporaryDirectory() as tmp:
    samples = ((f"{i:06d}", jpeg(i), "jpg", shapes.draw(0, "test", i, 16)["captions"])
               for i in range(256))
    make_shards.write_shards(samples, tmp, samples_per_shard=64)
    size_kb = np.mean([os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)
                       if f.endswith(".tar")]) / 64 / 1024
    print(f"source: 256 distinct 400x300 JPEGs (~{size_kb:.0f} KiB each) in 4 shards; "
          f"pipeline: {pp}; {os.cpu_count()} CPU cores")
    workers = [int(w) for w in args.workers.split(",")]
    for w in workers:
      run({"name": "tar", "pattern": tmp}, pp, args, w, "local disk")
    if args.s3:
      with _s3_copy(tmp) as url:
        data = {"name": "tar", "pattern": url, "index_dir": os.path.join(tmp, "cache")}
        start = time.perf_counter()
        sources.TarShards(url, index_dir=data["index_dir"])
        print(f"S3: indexed 4 shards in {time.perf_counter() - start:.2f} s")
        reads = []
        counted = shard_index.read_range

        def read_range(path, begin, end):
          reads.append(end - begin)
          return counted(path, begin, end)

        shard_index.read_range = read_range  # Counted in this process (0 workers).
        run(data, pp, args, 0, "loopback S3")
        shard_index.read_range = counted
        print(f"S3 reads: {len(reads)} ranged GETs for {len(reads)} samples read, "
              f"{np.mean(reads) / 1024:.0f} KiB each")
        for w in workers:
          if w:
            run(data, pp, args, w, "loopback S3")


def run(data: dict, pp: str, args, workers: int, where: str) -> None:
  it = loader.GrainInput(data=data, pp=pp, global_batch=args.batch, num_workers=workers,
                         process_index=0, process_count=1)
  for _ in range(3):  # warm-up: worker start-up, first reads
    next(it)
  n = max(1, args.images // args.batch)
  start = time.perf_counter()
  for _ in range(n):
    next(it)
  rate = n * args.batch / (time.perf_counter() - start)
  it.close()
  per_core = rate / max(workers, 1)
  print(f"{where}, workers {workers}: {rate:7.0f} img/s ({per_core:.0f} img/s per busy process)")


@contextlib.contextmanager
def _s3_copy(folder: str):
  """s3://bench/shards holding the .tar files of `folder`, on moto's S3 server on loopback (its
  own process, so that serving does not take this process's CPU)."""
  import fsspec  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                    AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
  try:
    for _ in range(600):
      with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
          break
      time.sleep(0.1)
    fs = fsspec.filesystem("s3")
    fs.mkdir("bench")
    for name in os.listdir(folder):
      if name.endswith(".tar"):
        fs.put_file(os.path.join(folder, name), f"bench/shards/{name}")
    yield "s3://bench/shards"
  finally:
    server.terminate()
    server.wait()

if __name__ == "__main__":
  main()
