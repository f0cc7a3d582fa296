"""Random-access data sources: image-text tar shards, tfds (ArrayRecord), the shapes dataset.

A source has `__len__` and `__getitem__(i) -> dict` of raw fields; `standardize` turns a raw
record into `{'image': encoded bytes or uint8 array, 'captions': [str, ...]}`, raising
`BadRecord` when it cannot (the loader skips and counts those).
"""

import glob
import json
import os
import re
import tarfile
import threading
from typing import Any

from big_vision_lite import errors
from big_vision_lite.data import shapes

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class DataError(errors.Error, ValueError):
  """Input data that cannot train: the message names the source or op and the fix."""


class BadRecord(ValueError):
  """A record that cannot become an example (missing image or caption, unreadable bytes)."""


def expand_pattern(pattern: str) -> list[str]:
  """Paths for a directory, a glob, a brace range (`shards-{00000..00099}.tar`), or a
  comma-separated list of those; sorted within each part."""
  paths = []
  for part in pattern.split(","):
    part = part.strip()
    m = re.search(r"\{(\d+)\.\.(\d+)\}", part)
    if m:
      lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
      paths.extend(part[:m.start()] + str(i).zfill(width) + part[m.end():]
                   for i in range(lo, hi + 1))
    elif os.path.isdir(part):
      paths.extend(sorted(glob.glob(os.path.join(part, "*.tar"))))
    else:
      paths.extend(sorted(glob.glob(part)))
  return [p for p in paths if os.path.isfile(p)]


def _index_tar(path: str) -> tuple[list[tuple[str, dict[str, tuple[int, int]]]], str | None]:
  """[(key, {ext: (data offset, size)})] in file order, and why the tar is cut short (None when
  it is whole)."""
  samples: dict[str, dict[str, tuple[int, int]]] = {}
  file_size = os.path.getsize(path)
  try:
    with tarfile.open(path, "r:") as tar:
      for member in tar:
        if member.offset_data + member.size > file_size:
          return list(samples.items()), (f"{member.name} needs bytes up to "
                                         f"{member.offset_data + member.size}, the file ends at "
                                         f"{file_size}")
        if not member.isfile():
          continue
        base = os.path.basename(member.name)
        if base.startswith("."):
          continue
        key, _, ext = base.partition(".")
        key = os.path.join(os.path.dirname(member.name), key)
        samples.setdefault(key, {})[ext.lower()] = (member.offset_data, member.size)
      end = tar.offset  # Where tarfile stopped: the end-of-archive blocks should start here.
  except (tarfile.TarError, OSError) as e:
    return list(samples.items()), f"{type(e).__name__}: {e}"
  # tarfile also stops quietly at a header cut off by the end of the file or at bytes that are no
  # header at all, so a whole archive is one whose rest is the zero blocks that end it.
  return list(samples.items()), _trailing_problem(path, end, file_size)


def _trailing_problem(path: str, end: int, file_size: int) -> str | None:
  """Why bytes end.. of a tar are not the end-of-archive zero blocks, or None if they are."""
  if end >= file_size:
    return f"no end-of-archive marker: the file ends at byte {file_size}, after the last member"
  with open(path, "rb") as f:
    f.seek(end)
    pos = end
    while chunk := f.read(1 << 20):
      stripped = chunk.lstrip(b"\0")
      if stripped:
        pos += len(chunk) - len(stripped)
        break
      pos += len(chunk)
    else:
      return None
  if pos > end:
    return (f"{file_size - pos} bytes of data at byte {pos}, after the end-of-archive marker at "
            f"byte {end}, are not read")
  if file_size - end < tarfile.BLOCKSIZE:
    return f"a member header at byte {end} is cut off by the end of the file at byte {file_size}"
  return f"the bytes from byte {end} on are neither a member header nor the end-of-archive marker"


class TarShards:
  """Samples of image-text tar shards (img2dataset layout: KEY.jpg + KEY.txt [+ KEY.json]).

  Shards are indexed (member headers only) at start and read in place, never unpacked. A shard
  cut short keeps the samples before the cut and says why in `warnings` (printed at start).
  """

  def __init__(self, pattern: str):
    self.pattern = pattern
    self.files = expand_pattern(pattern)
    if not self.files:
      raise FileNotFoundError(
          f"no tar shards match {pattern!r}: give a directory of .tar files, a glob, or a range "
          "such as /data/shards-{00000..00099}.tar; to write shards from images and captions "
          "run `python -m big_vision_lite.tools.make_shards --help`")
    self.samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
    self.warnings: list[str] = []
    for i, path in enumerate(self.files):
      entries, problem = _index_tar(path)
      if problem:
        self.warnings.append(f"{path}: cut short after {len(entries)} samples ({problem})")
      self.samples.extend((i, key, members) for key, members in entries)
    if not self.samples:
      raise DataError(f"the tar shards matching {pattern!r} ({len(self.files)} files) contain no "
                      "samples" + (f": {self.warnings[0]}" if self.warnings else ""))
    self._local = threading.local()

  def __len__(self) -> int:
    return len(self.samples)

  def _handle(self, file_index: int):
    handles = self._local.__dict__.setdefault("handles", {})
    if file_index not in handles:
      handles[file_index] = open(self.files[file_index], "rb")  # pylint: disable=consider-using-with
    return handles[file_index]

  def __getitem__(self, index: int) -> dict[str, Any]:
    file_index, key, members = self.samples[index]
    f = self._handle(file_index)
    record = {"__key__": key}
    for ext, (offset, size) in members.items():
      f.seek(offset)
      record[ext] = f.read(size)
    return record

  def __getstate__(self):  # File handles stay behind when the source goes to a worker process.
    state = dict(self.__dict__)
    state.pop("_local")
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()


class ShapesSource:
  """The embedded shapes split as a finite random-access source of `size` examples: captioned
  images, or with `task` (shapes.TASKS) one-object images and their class ('label')."""

  def __init__(self, split: str = "train", seed: int = 0, image_size: int = 64,
               size: int = 1 << 20, task: str | None = None):
    self.split, self.seed, self.image_size, self.size = split, seed, image_size, size
    self.task = task

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, Any]:
    if self.task:
      ex, label = shapes.draw_task(self.task, self.seed, self.split, int(index), self.image_size)
      return {"image": ex["image"], "label": label}
    ex = shapes.draw(self.seed, self.split, int(index), self.image_size)
    return {"image": ex["image"], "captions": ex["captions"], "regions": ex["regions"]}


def lookup(record, path: str):
  """record['a']['b'] for path 'a/b'."""
  for part in path.split("/"):
    record = record[part]
  return record


def _nested(path: str, value) -> dict[str, Any]:
  """{'a': {'b': value}} for path 'a/b'."""
  *parents, leaf = path.split("/")
  out = {leaf: value}
  for part in reversed(parents):
    out = {part: out}
  return out


class TfdsSource:
  """A tfds dataset prepared in ArrayRecord format, read through its random-access data source
  (no TensorFlow in the reading process). `image_key` and `caption_key` ('/'-separated paths
  into the features, e.g. 'captions/text' for coco_captions) name the fields."""

  def __init__(self, name: str, split: str = "train", data_dir: str | None = None,
               image_key: str = "image", caption_key: str | None = None,
               label_key: str = "label"):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    self.name, self.split, self.data_dir, self.label_key = name, split, data_dir, label_key
    self.image_key, self.caption_key = image_key, caption_key
    where = data_dir or "the default data_dir (~/tensorflow_datasets)"
    hint = (f"prepare it with `python -m big_vision_lite.tools.prepare_tfds {name} --data_dir "
            f"{data_dir or 'DIR'}` (needs the [prepare] extra: pip install -e '.[prepare]')")
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
      raise FileNotFoundError(f"unknown tfds dataset {name!r}: not a tfds builder and not found "
                              f"under {where} (built-in sources: 'tar', 'shapes')") from None
    if not builder.is_prepared():
      raise FileNotFoundError(f"tfds dataset {name!r} is not prepared under {where}: {hint}")
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise ValueError(f"tfds dataset {name!r} under {where} is stored as "
                       f"{builder.info.file_format.value}, which needs TensorFlow to read: "
                       f"{hint}")
    if split not in builder.info.splits:
      raise ValueError(f"tfds dataset {name!r} has no split {split!r}; it has "
                       f"{list(builder.info.splits)}")
    self.info = builder.info
    # The image stays encoded (the `decode` op decodes it where preprocessing runs), so reading
    # a record's other fields costs no image decoding.
    decoders = _nested(image_key, tfds.decode.SkipDecoding()) if isinstance(
        lookup(builder.info.features, image_key), tfds.features.Image) else None
    self.source = builder.as_data_source(split=split, decoders=decoders)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self.source[index]
    out = {"image": lookup(record, self.image_key)}
    if self.caption_key:
      captions = lookup(record, self.caption_key)
      captions = [captions] if isinstance(captions, (str, bytes)) else list(captions)
      out["captions"] = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in captions]
    if self.label_key and self.label_key.split("/")[0] in record:
      out["label"] = lookup(record, self.label_key)
    return out


def standardize(record: dict[str, Any]) -> dict[str, Any]:
  """A raw record -> {'image', 'captions'} (or {'image', 'label'} from a labelled source), with
  `regions` and `conversations` when its .json has them; BadRecord if the image is missing or
  unreadable, or it has neither a caption nor conversations."""
  if "image" in record and ("captions" in record or "label" in record):
    return record
  image = next((record[e] for e in IMAGE_EXTS if e in record), None)
  if image is None:
    raise BadRecord(f"{record.get('__key__')}: no image ({'/'.join(IMAGE_EXTS)}) in the sample")
  captions, meta = [], {}
  if "json" in record:
    try:
      meta = json.loads(record["json"])
    except ValueError as e:
      raise BadRecord(f"{record.get('__key__')}: unreadable json ({e})") from None
  if "txt" in record:
    captions = [c.strip() for c in record["txt"].decode("utf-8", "replace").splitlines()]
  elif meta:
    caption = meta.get("caption") or meta.get("text")
    captions = caption if isinstance(caption, list) else [caption] if caption else []
  captions = [c for c in captions if c]
  if not captions and "conversations" not in meta:
    raise BadRecord(f"{record.get('__key__')}: no caption (.txt or .json 'caption') and no "
                    ".json 'conversations'")
  out = {"image": image, "captions": captions}
  if meta.get("regions") is not None:
    out["regions"] = _regions(meta["regions"], record.get("__key__"))
  if "conversations" in meta:
    out["conversations"] = _conversations(meta["conversations"], record.get("__key__"))
  return out


def _conversations(turns, key) -> list[tuple[str, str]]:
  """A sample's `conversations` in LLaVA's layout (a list of {'from': 'human' | 'gpt', 'value':
  str}, alternating, human first) -> [(question, answer)], with LLaVA's '<image>' marker
  dropped (the image tokens always come first); BadRecord if malformed."""
  ok = (isinstance(turns, list) and turns and len(turns) % 2 == 0 and all(
      isinstance(t, dict) and t.get("from") == ("human", "gpt")[i % 2]
      and isinstance(t.get("value"), str) for i, t in enumerate(turns)))
  if not ok:
    raise BadRecord(f"{key}: bad conversations {str(turns)[:200]}: expected a list of {{'from': "
                    "'human' | 'gpt', 'value': str}, alternating, human first, ending with gpt")
  clean = lambda v: " ".join(v.replace("<image>", " ").split())
  return [(clean(turns[i]["value"]), clean(turns[i + 1]["value"]))
          for i in range(0, len(turns), 2)]


def _regions(regions, key) -> list[dict[str, Any]]:
  """A sample's `regions` (a list of {'box': [y0, x0, y1, x1] in [0, 1], 'text': str}),
  checked; BadRecord if malformed."""
  out = []
  for r in regions if isinstance(regions, list) else [None]:
    box = r.get("box") if isinstance(r, dict) else None
    if (not isinstance(box, (list, tuple)) or len(box) != 4 or not isinstance(r.get("text"), str)
        or not all(isinstance(v, (int, float)) for v in box)
        or not 0 <= box[0] <= box[2] <= 1 or not 0 <= box[1] <= box[3] <= 1):
      raise BadRecord(f"{key}: bad region {r!r}: regions are a list of {{'box': [y0, x0, y1, "
                      "x1] with 0 <= y0 <= y1 <= 1 and 0 <= x0 <= x1 <= 1, 'text': str}")
    out.append({"box": [float(v) for v in box], "text": r["text"]})
  return out


def make_source(data: dict[str, Any]):
  """The source for one `config.input.data` entry (without its `weight`)."""
  data = dict(data)
  name = data.pop("name", None)
  data.pop("weight", None)
  if name == "tar":
    return TarShards(**data)
  if name == "shapes":
    return ShapesSource(**data)
  if not name:
    raise DataError("a data source needs a name: 'tar' (pattern=...), 'shapes', or a tfds "
                    "dataset name (split=..., data_dir=...)")
  return TfdsSource(name, **data)
