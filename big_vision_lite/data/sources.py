"""Random-access data sources: image-text tar shards, tfds (ArrayRecord), the shapes dataset.

A source has `__len__` and `__getitem__(i) -> dict` of raw fields; `standardize` turns a raw
record into `{'image': encoded bytes or uint8 array, 'captions': [str, ...]}`, raising
`BadRecord` when it cannot (the loader skips and counts those).
"""

import collections
import json
import threading
from typing import Any

import numpy as np

from big_vision_lite import errors
from big_vision_lite.data import shapes, shard_index

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class DataError(errors.Error, ValueError):
  """Input data that cannot train: the message names the source or op and the fix."""


class DataNotFound(DataError, FileNotFoundError):
  """No data where the config points (a tar pattern matching no file, an unknown tfds name)."""


class BadRecord(ValueError):
  """A record that cannot become an example (missing image or caption, unreadable bytes)."""


def expand_pattern(pattern: str) -> list[str]:
  """Paths for a directory, a glob, a brace range (`shards-{00000..00099}.tar`), or a
  comma-separated list of those, local or remote (`gs://`, `s3://`, any fsspec URL); sorted
  within each part."""
  return [path for path, _, _ in shard_index.list_shards(pattern)]


class TarShards:
  """Samples of image-text tar shards (img2dataset layout: KEY.jpg + KEY.txt [+ KEY.json]),
  local or on any fsspec storage (`gs://`, `s3://`, ...).

  Start-up reads one small index per shard (`shard_index`: built once in parallel where
  missing, stale or damaged, then cached) and keeps O(shards) in memory: the cumulative sample
  counts, so global index i -> (shard, row) is a binary search. A sample is one read of its byte
  range; the offsets of recently read shards stay in a bounded cache. A shard cut short keeps
  the samples before the cut and says why in `warnings` (printed at start).
  """

  # Offsets kept per process (8 bytes a sample): all of them up to ~16M samples; past that, the
  # least recently read shards' offsets are read again when needed.
  CACHED_OFFSETS = 1 << 24

  def __init__(self, pattern: str, index_dir: str | None = None):
    self.pattern, self.index_dir = pattern, index_dir
    listed = shard_index.list_shards(pattern)
    if not listed:
      raise DataNotFound(
          f"no tar shards match {pattern!r}: give a directory of .tar files, a glob, or a range "
          "such as /data/shards-{00000..00099}.tar (or gs://, s3://, ... URLs); to write shards "
          "from images and captions run `python -m big_vision_lite.tools.make_shards --help`")
    self.files = [path for path, _, _ in listed]
    self.sizes = np.asarray([size for _, size, _ in listed], np.int64)
    self.mtimes = np.asarray([mtime for _, _, mtime in listed], np.int64)
    counts, self.where, self.warnings = shard_index.load_counts(listed, index_dir)
    self.cumulative = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [shards + 1]
    if not self.cumulative[-1]:
      raise DataError(f"the tar shards matching {pattern!r} ({len(self.files)} files) contain no "
                      "samples" + (f": {self.warnings[0]}" if self.warnings else ""))
    self._init_cache()

  def _init_cache(self):
    self._offsets: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._cached = 0
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self.cumulative[-1])

  def locate(self, index: int) -> tuple[int, int]:
    """(shard, row) of global sample `index`."""
    if not 0 <= index < len(self):
      raise IndexError(f"sample {index} of {len(self)}")
    shard = int(np.searchsorted(self.cumulative, index, side="right")) - 1
    return shard, index - int(self.cumulative[shard])

  def offsets(self, shard: int) -> np.ndarray:
    """Byte offsets [n + 1] where the samples of `shard` start (and the last one ends)."""
    with self._lock:
      if shard in self._offsets:
        self._offsets.move_to_end(shard)
        return self._offsets[shard]
    offsets = shard_index.load_offsets(self.files[shard], int(self.sizes[shard]),
                                       int(self.mtimes[shard]), int(self.where[shard]),
                                       self.index_dir,
                                       int(self.cumulative[shard + 1] - self.cumulative[shard]))
    with self._lock:
      self._offsets[shard] = offsets
      self._cached += len(offsets)
      while self._cached > self.CACHED_OFFSETS and len(self._offsets) > 1:
        self._cached -= len(self._offsets.popitem(last=False)[1])
    return offsets

  def __getitem__(self, index: int) -> dict[str, Any]:
    shard, row = self.locate(int(index))
    offsets = self.offsets(shard)
    start, end = int(offsets[row]), int(offsets[row + 1])
    path = self.files[shard]
    return shard_index.parse_sample(shard_index.read_range(path, start, end), path, row, start)

  def __getstate__(self):  # The offsets cache stays behind when the source goes to a worker.
    state = dict(self.__dict__)
    for k in ("_offsets", "_cached", "_lock"):
      state.pop(k)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_cache()


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
  into the features, e.g. 'captions/text' for coco_captions) name the fields. A remote
  `data_dir` (gs://, s3://, ...) goes through tfds's own file layer (etils epath); whether the
  records read from there is ArrayRecord's affair, so the first one is read at start."""

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
      prepared = builder.is_prepared()
    except tfds.core.DatasetNotFoundError:
      raise DataNotFound(f"unknown tfds dataset {name!r}: not a tfds builder and not found "
                              f"under {where} (built-in sources: 'tar', 'shapes')") from None
    except Exception as e:  # pylint: disable=broad-except
      if not (data_dir and shard_index.is_remote(data_dir)):
        raise
      raise DataError(f"cannot read tfds data_dir {data_dir}: {type(e).__name__}: {e}. Check the "
                      "bucket and path, the credentials and the endpoint (AWS_ENDPOINT_URL for "
                      "S3-compatible storage)") from None
    if not prepared:
      raise DataNotFound(f"tfds dataset {name!r} is not prepared under {where}: {hint}")
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise DataError(f"tfds dataset {name!r} under {where} is stored as "
                      f"{builder.info.file_format.value}, which needs TensorFlow to read: "
                      f"{hint}")
    if split not in builder.info.splits:
      raise DataError(f"tfds dataset {name!r} has no split {split!r}; it has "
                      f"{list(builder.info.splits)}")
    self.info = builder.info
    # The image stays encoded (the `decode` op decodes it where preprocessing runs), so reading
    # a record's other fields costs no image decoding.
    decoders = _nested(image_key, tfds.decode.SkipDecoding()) if isinstance(
        lookup(builder.info.features, image_key), tfds.features.Image) else None
    self.source = builder.as_data_source(split=split, decoders=decoders)
    if data_dir and shard_index.is_remote(data_dir) and len(self.source):
      try:
        self.source[0]  # pylint: disable=pointless-statement
      except Exception as e:  # pylint: disable=broad-except
        raise DataError(
            f"tfds dataset {name!r} under {data_dir}: its ArrayRecord files cannot be read in "
            f"place ({type(e).__name__}: {e}); copy the prepared dataset to a local disk and set "
            "data_dir there, or write it as tar shards (make_shards), which read from any "
            "storage") from None

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
