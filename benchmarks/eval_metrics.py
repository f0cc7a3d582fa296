"""Time and peak memory of the evaluation metrics at full-dataset sizes (random embeddings).

  python benchmarks/eval_metrics.py [--tasks linear_probe,retrieval,zeroshot,fewshot]
      [--images 5000 --captions_per_image 5 --dim 768 --classes 1000 --train_examples 1281167]

Linear probe: ImageNet-train-sized features (1,281,167 x 768, 1000 classes) drawn chunk by
chunk and streamed through the linear probe's accumulator (float64 moments, 10k held-out
features), the strength chosen over 19 and refit, then 50k test features through the chosen
classifier. The features never exist all at once: the point is the bounded memory.
Retrieval: COCO-test-sized recall@1/5/10 both ways (5k images x 25k captions, chunked).
Zero-shot: ImageNet-val-sized scoring and ranks (50k images x 1000 classes).
Few-shot: 25 shots x 1000 classes ridge probe on 768-d features, one seed.
Peak memory: the most memory numpy allocated beyond the inputs while computing (tracemalloc);
for the linear probe, which runs first, also the growth of the process's peak resident set.
"""

import argparse
import resource
import time
import tracemalloc

import numpy as np

from big_vision_lite.evaluators import fewshot, linear_probe, ranking, retrieval, ridge


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


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def bench_linear_probe(args) -> None:
  """Streams ImageNet-sized synthetic features through the linear probe, chunk by chunk."""
  centres = np.random.default_rng(0).normal(size=(args.classes, args.dim)).astype(np.float32)
  drawing = np.zeros(2)  # Wall and CPU seconds spent drawing features: not the probe's cost.

  def features(n: int, seed: int):
    """Labels [n] and a stream of (start, features [chunk, d]) around their class centres."""
    labels = np.random.default_rng(seed).integers(0, args.classes, n)

    def chunks():
      for s in range(0, n, args.chunk):
        t0, c0 = time.perf_counter(), time.process_time()
        noise = np.random.default_rng((seed, s)).standard_normal(
            (min(args.chunk, n - s), args.dim), np.float32)
        x = centres[labels[s:s + args.chunk]] + 16 * noise  # Overlapping classes.
        drawing[:] += (time.perf_counter() - t0, time.process_time() - c0)
        yield s, x
    return labels, chunks()

  n = args.train_examples
  held = linear_probe.holdout_mask(n, 0.2, 10_000, seed=0)

  def timed(fn):
    """(fn(), wall seconds, CPU seconds of all threads), less the time spent drawing."""
    drawing[:] = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0 - drawing[0], time.process_time() - c0 - drawing[1]

  def run():
    labels, stream = features(n, 1)
    (moments, hx, hy), *stream_s = timed(
        lambda: linear_probe.accumulate(stream, labels, 0, held, args.classes))
    (w, b, best, _), *fit_s = timed(lambda: linear_probe.fit(moments, hx, hy))
    test_labels, test = features(args.test_examples, 2)
    ranks, *test_s = timed(lambda: np.concatenate([ranking.stable_rank(
        x.astype(np.float64) @ w + b, test_labels[s:s + len(x)]) for s, x in test]))
    return stream_s, fit_s, test_s, best, float(np.mean(ranks < 1))

  rss0 = _peak_rss_mib()
  (stream_s, fit_s, test_s, best, top1), seconds, peak = _peak_mb(run)
  wall_cpu = lambda t: f"{t[0]:.1f} s ({t[1]:.1f} s CPU)"
  print(f"linear probe, {n} x {args.dim} features, {args.classes} classes, chunks of "
        f"{args.chunk}: streamed into the moments {wall_cpu(stream_s)}; strength chosen among "
        f"19 on {int(held.sum())} held-out examples and refit {wall_cpu(fit_s)}; "
        f"{args.test_examples} test examples through the classifier {wall_cpu(test_s)}; "
        f"{seconds:.1f} s in all with drawing the features. Peak memory +{peak:.0f} MiB "
        f"(tracemalloc), peak RSS +{_peak_rss_mib() - rss0:.0f} MiB (the features alone, "
        f"float32: {n * args.dim * 4 / 2**20:.0f} MiB); top1 {top1:.4f}, log10 l2 "
        f"{np.log10(ridge.L2_GRID[best]):.1f}")

def main():
  p = argparse.ArgumentParser()
  p.add_argument("--tasks", default="linear_probe,retrieval,zeroshot,fewshot")
  p.add_argument("--images", type=int, default=5000)
  p.add_argument("--captions_per_image", type=int, default=5)
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--zeroshot_images", type=int, default=50_000)
  p.add_argument("--train_examples", type=int, default=1_281_167)  # ImageNet's train split.
  p.add_argument("--test_examples", type=int, default=50_000)
  p.add_argument("--chunk", type=int, default=4096)
  args = p.parse_args()
  tasks = args.tasks.split(",")
  rng = np.random.default_rng(0)

  if "linear_probe" in tasks:  # First: the process's peak resident set is still its own.
    bench_linear_probe(args)

  if "retrieval" in tasks:
    zimg = _unit(rng, args.images, args.dim)
    ztxt = _unit(rng, args.images * args.captions_per_image, args.dim)
    owner = np.repeat(np.arange(args.images), args.captions_per_image)
    r, seconds, peak = _peak_mb(lambda: retrieval.recall_at_k(zimg, ztxt, owner))
    print(f"retrieval {args.images} images x {len(ztxt)} captions, {args.dim}-d: "
          f"{seconds:.1f} s, peak memory +{peak:.0f} MiB "
          f"(the full matrix would be {args.images * len(ztxt) * 4 / 2**20:.0f} MiB); "
          f"R@1 {r['img2txt_r@1']:.4f} (chance {1 / args.images:.4f})")

  if "zeroshot" in tasks:
    images = _unit(rng, args.zeroshot_images, args.dim)
    classes = _unit(rng, args.classes, args.dim)
    labels = rng.integers(0, args.classes, args.zeroshot_images)
    m, seconds, peak = _peak_mb(lambda: ranking.accuracy_metrics(images @ classes.T, labels))
    print(f"zero-shot {args.zeroshot_images} images x {args.classes} classes: "
          f"{seconds:.1f} s, peak memory +{peak:.0f} MiB (scores included); "
          f"top1 {m['top1']:.4f} (chance {1 / args.classes:.4f})")

  if "fewshot" in tasks:
    x = rng.normal(size=(30 * args.classes, args.dim)).astype(np.float32)
    y = np.repeat(np.arange(args.classes), 30)
    t0 = time.perf_counter()
    fewshot.fewshot_accuracy(x, y, x[:5000], y[:5000], args.classes, shots=(25,), seeds=1)
    print(f"few-shot 25 shots x {args.classes} classes, {args.dim}-d, 19 strengths: "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
  main()
