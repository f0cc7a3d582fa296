"""Start-up time and memory of the tar input as the dataset grows (LAION-shaped synthetic shards).

  python benchmarks/input_at_scale.py [--root /tmp/bvl-laion-synth] [--shards 100,1000]
                                      [--per_shard 1000] [--baseline PATH_TO_OLD_CHECKOUT]

Writes (once) `max(--shards)` img2dataset-style shards of `--per_shard` samples each (KEY.jpg,
KEY.txt, KEY.json; small payloads, so the tar structure is what costs) under --root, without
indexes. For each shard count (the first N shards), in a fresh process each:
  1. first use: the shard indexes are built (in parallel, all cores) and cached beside them;
  2. warm start: time to the first batch of GrainInput (global batch 256, a light op string so
     that preprocessing does not count), RSS after start and after reading 20k samples (all
     shards' offsets then cached), and peak RSS;
  3. (--baseline) the same warm start with another checkout's code (e.g. the per-sample index).
Prints the per-shard and per-sample costs and extrapolates them to CC12M, LAION-400M and
DataComp-1B.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PP = "choice(inkey='captions',outkey='text')|keep('text')"


def _member(name: str, data: bytes) -> bytes:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def write_shard(args) -> None:
  """One shard of `per_shard` samples: a 64-byte stand-in image, a caption, a json record."""
  path, shard, per_shard = args
  if os.path.exists(path):
    return
  parts = []
  for row in range(per_shard):
    key = f"{shard:05d}{row:04d}"
    caption = f"a photo of thing {shard}-{row} on a table"
    parts += [_member(f"{key}.jpg", bytes(range(64))), _member(f"{key}.txt", caption.encode()),
              _member(f"{key}.json", json.dumps({"caption": caption, "key": key}).encode())]
  parts.append(bytes(2 * tarfile.BLOCKSIZE))
  with open(path + ".tmp", "wb") as f:
    f.write(b"".join(parts))
  os.replace(path + ".tmp", path)


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def child(pattern: str) -> None:
  """Runs in a fresh process: prints one JSON line of timings and memory."""
  import resource  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from big_vision_lite.data import loader  # pylint: disable=import-outside-toplevel
  rss_imports = _rss_mb()
  start = time.perf_counter()
  it = loader.GrainInput(data={"name": "tar", "pattern": pattern}, pp=PP, global_batch=256,
                         process_index=0, process_count=1)
  ready = time.perf_counter()
  next(it)
  first = time.perf_counter()
  rss_start = _rss_mb()
  n = len(it._sources[0][1])  # pylint: disable=protected-access
  for _ in range(20_000 // 256):
    next(it)
  read = time.perf_counter()
  rss_read = _rss_mb()
  source = it._sources[0][1]  # pylint: disable=protected-access
  files = getattr(source, "files", [])
  per_shard = (sum(sys.getsizeof(f) + 8 for f in files) + sum(
      getattr(source, a).nbytes for a in ("cumulative", "sizes", "mtimes", "where")
      if hasattr(source, a))) / max(1, len(files))
  idx = np.random.default_rng(0).integers(0, n, 2000)
  t = time.perf_counter()
  for i in idx:
    source[int(i)]
  per_sample = (time.perf_counter() - t) / len(idx)
  it.close()
  print(json.dumps({"samples": n, "source_s": ready - start, "first_batch_s": first - start,
                    "rss_imports_mb": rss_imports, "rss_start_mb": rss_start,
                    "rss_after_20k_mb": rss_read, "read_20k_s": read - first,
                    "random_read_us": per_sample * 1e6, "per_shard_bytes": per_shard,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(pattern: str, code_root: str) -> dict:
  env = dict(os.environ, PYTHONPATH=code_root, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", pattern], env=env,
                       check=True, capture_output=True, text=True, cwd=code_root)
  return json.loads(out.stdout.strip().splitlines()[-1])


def first_use(pattern: str) -> float:
  """Seconds to build the indexes of `pattern` in a fresh process (all cores)."""
  code = ("import time; from big_vision_lite.data import sources; t = time.perf_counter(); "
          f"sources.TarShards({pattern!r}); print(time.perf_counter() - t)")
  out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                       check=True, capture_output=True, text=True)
  progress = [line for line in out.stdout.splitlines() if line.startswith("indexing")]
  if progress:
    print("    " + progress[-1])
  return float(out.stdout.strip().splitlines()[-1])


DATASETS = [("CC12M", 1_243, 12_000_000), ("LAION-400M", 41_455, 400_000_000),
            ("DataComp-1B", 140_000, 1_400_000_000)]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--root", default="/tmp/bvl-laion-synth")
  p.add_argument("--shards", default="100,1000")
  p.add_argument("--per_shard", type=int, default=1000)
  p.add_argument("--baseline", default=None, help="a checkout of the code to compare with")
  p.add_argument("--baseline_shards", default="100")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    child(args.child)
    return
  counts = [int(n) for n in args.shards.split(",")]
  os.makedirs(args.root, exist_ok=True)
  t = time.perf_counter()
  jobs = [(os.path.join(args.root, f"{s:05d}.tar"), s, args.per_shard) for s in range(max(counts))]
  with ProcessPoolExecutor() as pool:
    list(pool.map(write_shard, jobs, chunksize=8))
  print(f"dataset: {max(counts)} shards x {args.per_shard} samples under {args.root} "
        f"({time.perf_counter() - t:.0f} s to write or find); {os.cpu_count()} CPU cores")
  results = {}
  for n in counts:
    pattern = os.path.join(args.root, "{00000..%05d}.tar" % (n - 1))
    for s in range(n):
      index = os.path.join(args.root, f"{s:05d}.tar.idx")
      if os.path.exists(index):
        os.remove(index)
    built = first_use(pattern)
    warm = run_child(pattern, ROOT)
    results[n] = warm
    print(f"{n} shards ({warm['samples']} samples): first use (index build) {built:.1f} s "
          f"({built / n * 1e3:.1f} ms/shard); warm start: source {warm['source_s'] * 1e3:.0f} ms "
          f"({warm['source_s'] / n * 1e3:.2f} ms/shard), first batch "
          f"{warm['first_batch_s'] * 1e3:.0f} ms; RSS after imports "
          f"{warm['rss_imports_mb']:.0f} MB, at first batch {warm['rss_start_mb']:.0f} MB, "
          f"after 20k samples {warm['rss_after_20k_mb']:.0f} MB, peak {warm['peak_rss_mb']:.0f} "
          f"MB; random sample read {warm['random_read_us']:.0f} us")
  if args.baseline:
    for n in (int(x) for x in args.baseline_shards.split(",")):
      pattern = os.path.join(args.root, "{00000..%05d}.tar" % (n - 1))
      old = run_child(pattern, os.path.abspath(args.baseline))
      print(f"baseline {args.baseline}, {n} shards: start {old['source_s']:.1f} s "
            f"({old['source_s'] / n * 1e3:.1f} ms/shard, "
            f"{old['source_s'] / old['samples'] * 1e6:.1f} us/sample), first batch "
            f"{old['first_batch_s']:.1f} s, RSS at first batch {old['rss_start_mb']:.0f} MB "
            f"({(old['rss_start_mb'] - old['rss_imports_mb']) * 2**20 / old['samples']:.0f} "
            f"bytes/sample over the imports), peak {old['peak_rss_mb']:.0f} MB")
      results[f"baseline{n}"] = old
  if len(counts) >= 2:
    lo, hi = results[counts[0]], results[counts[-1]]
    per_shard = (hi["source_s"] - lo["source_s"]) / (counts[-1] - counts[0])
    fixed = lo["source_s"] - per_shard * counts[0]
    print(f"\nstart ratio {counts[-1]}/{counts[0]} shards: "
          f"{hi['first_batch_s'] / lo['first_batch_s']:.2f}x; marginal start cost "
          f"{per_shard * 1e3:.2f} ms/shard (warm cache); offsets cache 8 bytes/sample")
    shard_bytes = hi["per_shard_bytes"]
    print(f"per-shard state {shard_bytes:.0f} bytes (paths, sizes, times, counts)")
    print("| dataset | shards | samples | warm start (extrapolated) | index memory per process: "
          "per-shard state + offsets cache (8 bytes/sample, capped at 128 MB) |")
    print("|---|---|---|---|---|")
    for name, shards, samples in DATASETS:
      offsets_mb = min(samples, 1 << 24) * 8 / 2**20
      print(f"| {name} | {shards:,} | {samples / 1e6:,.0f}M | "
            f"{fixed + per_shard * shards:.1f} s | {shards * shard_bytes / 2**20:.1f} MB + "
            f"{offsets_mb:.0f} MB |")


if __name__ == "__main__":
  main()
