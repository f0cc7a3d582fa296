"""Time and peak memory of the evaluation metrics at full-dataset sizes (random embeddings).

  python benchmarks/eval_metrics.py [--images 5000 --captions_per_image 5 --dim 768 --classes 1000]

Retrieval: COCO-test-sized recall@1/5/10 both ways (5k images x 25k captions, chunked).
Zero-shot: ImageNet-val-sized scoring and ranks (50k images x 1000 classes).
Few-shot: 25 shots x 1000 classes ridge probe on 768-d features, one seed.
Peak memory: the most memory numpy allocated beyond the inputs while computing (tracemalloc).
"""

import argparse
import time
import tracemalloc

import numpy as np

from big_vision_lite.evaluators import fewshot, retrieval, zeroshot


def _peak_mb(fn):
  """(fn(), seconds, MiB allocated at the peak beyond what was allocated before)."""
  tracemalloc.start()
  before = tracemalloc.get_traced_memory()[0]
  tracemalloc.reset_peak()
  t0 = time.perf_counter()
  out = fn()
  seconds = time.perf_counter() - t0
  peak = tracemalloc.get_traced_memory()[1] - before
  tracemalloc.stop()
  return out, seconds, peak / 2**20


def _unit(rng, n, d):
  x = rng.normal(size=(n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--images", type=int, default=5000)
  p.add_argument("--captions_per_image", type=int, default=5)
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--zeroshot_images", type=int, default=50_000)
  args = p.parse_args()
  rng = np.random.default_rng(0)

  zimg = _unit(rng, args.images, args.dim)
  ztxt = _unit(rng, args.images * args.captions_per_image, args.dim)
  owner = np.repeat(np.arange(args.images), args.captions_per_image)
  r, seconds, peak = _peak_mb(lambda: retrieval.recall_at_k(zimg, ztxt, owner))
  print(f"retrieval {args.images} images x {len(ztxt)} captions, {args.dim}-d: "
        f"{seconds:.1f} s, peak memory +{peak:.0f} MiB "
        f"(the full matrix would be {args.images * len(ztxt) * 4 / 2**20:.0f} MiB); "
        f"R@1 {r['img2txt_r@1']:.4f} (chance {1 / args.images:.4f})")

  images = _unit(rng, args.zeroshot_images, args.dim)
  classes = _unit(rng, args.classes, args.dim)
  labels = rng.integers(0, args.classes, args.zeroshot_images)
  m, seconds, peak = _peak_mb(lambda: zeroshot.accuracy_metrics(images @ classes.T, labels))
  print(f"zero-shot {args.zeroshot_images} images x {args.classes} classes: "
        f"{seconds:.1f} s, peak memory +{peak:.0f} MiB (scores included); "
        f"top1 {m['top1']:.4f} (chance {1 / args.classes:.4f})")

  x = rng.normal(size=(30 * args.classes, args.dim)).astype(np.float32)
  y = np.repeat(np.arange(args.classes), 30)
  t0 = time.perf_counter()
  fewshot.fewshot_accuracy(x, y, x[:5000], y[:5000], args.classes, shots=(25,), seeds=1)
  print(f"few-shot 25 shots x {args.classes} classes, {args.dim}-d, 19 strengths: "
        f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
  main()
