"""Writes image-text tar shards (img2dataset layout) from a folder of images and a captions file.

  python -m big_vision_lite.tools.make_shards --images DIR --captions captions.csv --output OUT
  python -m big_vision_lite.tools.make_shards --images DIR --captions captions.jsonl --output OUT

captions.csv has columns `file,caption`; captions.jsonl has {"file": ..., "caption": ...} per
line (`caption` may be a list). A file listed several times gets all its captions. Whitespace
in a caption is collapsed to single spaces (so a caption stays one line of KEY.txt), and an image
whose captions are all empty is skipped, printing how many and which (the first few). Each sample
is KEY.<ext> (the original image bytes) + KEY.txt (one caption per line) + KEY.json. Shards are
OUT/shards-00000.tar, ..., each with its index OUT/shards-00000.tar.idx (the byte offsets of
its samples, see big_vision_lite/data/shard_index.py); point a config at them with
input.data=dict(name='tar', pattern='OUT/shards-{00000..0000N}.tar') or just pattern='OUT'.

Shards written by other tools (img2dataset, webdataset) are indexed on first use; to index them
once beforehand, beside the shards (local or remote, e.g. before copying them to a bucket or for
a job whose processes should not each build them):

  python -m big_vision_lite.tools.make_shards --index 'gs://bucket/laion/{00000..41454}.tar'
"""

import argparse
import csv
import io
import json
import os
import tarfile
import time
from collections import OrderedDict

from big_vision_lite.data import shard_index


def read_captions(path: str) -> "OrderedDict[str, list[str]]":
  """{image file: [captions]} in file order, from .csv (file,caption) or .jsonl."""
  out: OrderedDict[str, list[str]] = OrderedDict()
  with open(path, encoding="utf-8") as f:
    if path.endswith(".csv"):
      rows = csv.DictReader(f)
      if not rows.fieldnames or not {"file", "caption"} <= set(rows.fieldnames):
        raise SystemExit(f"{path}: expected a header with columns 'file' and 'caption'")
      pairs = [(r["file"], r["caption"]) for r in rows]
    else:
      pairs = []
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            rec = json.loads(line)
            caps = rec["caption"] if isinstance(rec["caption"], list) else [rec["caption"]]
            pairs.extend((rec["file"], c) for c in caps)
          except (ValueError, KeyError) as e:
            raise SystemExit(f"{path}:{n}: expected {{\"file\": ..., \"caption\": ...}} ({e})")
  for file, caption in pairs:
    out.setdefault(file, []).append(caption)
  return out


def drop_empty_captions(captions: "OrderedDict[str, list[str]]"
                        ) -> tuple["OrderedDict[str, list[str]]", list[str]]:
  """Captions with whitespace collapsed and empty ones dropped, and the files left with none."""
  kept: OrderedDict[str, list[str]] = OrderedDict()
  empty = []
  for file, caps in captions.items():
    caps = [" ".join(str(c).split()) for c in caps if c is not None]
    caps = [c for c in caps if c]
    if caps:
      kept[file] = caps
    else:
      empty.append(file)
  return kept, empty


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _finish(tar: tarfile.TarFile, tmp: str, path: str) -> None:
  """Closes a shard, moves it into place and writes its index beside it."""
  tar.close()
  os.replace(tmp, path)
  st = os.stat(path)
  shard_index.build(path, st.st_size, st.st_mtime_ns, None, beside_only=True)


def write_shards(samples, output: str, samples_per_shard: int = 1000) -> list[str]:
  """Writes [(key, image bytes, image ext, [captions])] to OUTPUT/shards-NNNNN.tar (+ .idx)."""
  os.makedirs(output, exist_ok=True)
  paths, tar, tmp = [], None, None
  for i, (key, data, ext, captions) in enumerate(samples):
    if i % samples_per_shard == 0:
      if tar:
        _finish(tar, tmp, paths[-1])
      paths.append(os.path.join(output, f"shards-{len(paths):05d}.tar"))
      tmp = paths[-1] + ".tmp"
      tar = tarfile.open(tmp, "w")  # pylint: disable=consider-using-with
    _add(tar, f"{key}.{ext}", data)
    _add(tar, f"{key}.txt", "\n".join(captions).encode("utf-8"))
    _add(tar, f"{key}.json", json.dumps({"caption": captions, "key": key}).encode("utf-8"))
  if tar:
    _finish(tar, tmp, paths[-1])
  return paths


def index_shards(pattern: str) -> None:
  """Writes the index of every shard matching `pattern` that has none (or a stale or damaged
  one) beside it, in parallel."""
  start = time.monotonic()
  listed = shard_index.list_shards(pattern)
  if not listed:
    raise SystemExit(f"no tar shards match {pattern!r}")
  counts, _, warnings = shard_index.load_counts(listed, None, beside_only=True)
  for warning in warnings:
    print(f"warning: {warning}")
  print(f"{len(listed)} shards, {int(counts.sum())} samples indexed (index files beside the "
        f"shards) in {time.monotonic() - start:.1f} s")


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--images", help="folder the caption file's paths are relative to")
  p.add_argument("--captions", help="captions .csv (file,caption) or .jsonl")
  p.add_argument("--output", help="folder for shards-NNNNN.tar")
  p.add_argument("--samples_per_shard", type=int, default=1000)
  p.add_argument("--index", metavar="PATTERN",
                 help="instead: index existing shards (a folder, glob or {a..b} range; any URL)")
  args = p.parse_args(argv)
  if args.index:
    index_shards(args.index)
    return
  if not (args.images and args.captions and args.output):
    p.error("--images, --captions and --output are required (or --index PATTERN)")
  captions, empty = drop_empty_captions(read_captions(args.captions))
  if empty:
    print(f"skipped {len(empty)} images whose captions are all empty: {', '.join(empty[:5])}"
          + (", ..." if len(empty) > 5 else ""))
  if not captions:
    raise SystemExit(f"{args.captions}: no non-empty captions")
  missing = [f for f in captions if not os.path.isfile(os.path.join(args.images, f))]
  if missing:
    raise SystemExit(f"{len(missing)} listed images are not under {args.images}, e.g. {missing[0]}")

  def samples():
    for i, (file, caps) in enumerate(captions.items()):
      with open(os.path.join(args.images, file), "rb") as f:
        data = f.read()
      yield f"{i:09d}", data, os.path.splitext(file)[1].lstrip(".").lower() or "jpg", caps

  paths = write_shards(samples(), args.output, args.samples_per_shard)
  print(f"wrote {len(captions)} samples in {len(paths)} shards under {args.output}")


if __name__ == "__main__":
  main()
