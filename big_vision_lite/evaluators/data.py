"""Evaluation sets: the shapes tasks and tfds datasets, each process holding its own slice.

An EvalSet carries this process's images (an array, or LazyImages decoded batch by batch),
its labels or captions, and what every process needs to know (total size, class names). Every
process holds a contiguous share of the set (`process_range`), so the shares concatenated in
process order are the set in dataset order.
"""

import concurrent.futures
import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from big_vision_lite.data import ops, shapes, sources

# One object per image; the label is the attribute the task names.
SHAPES_CLASSIFICATION = shapes.TASKS
SHAPES_SIZE = 512  # Default number of examples drawn from a shapes split.


def process_range(n: int, index: int | None = None, count: int | None = None) -> range:
  """This process's contiguous share of `n` examples (shares differ in size by at most one)."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  return range(n * index // count, n * (index + 1) // count)


def local_share(items: Sequence[Any]) -> Sequence[Any]:
  """This process's contiguous share of a sequence every process holds in full."""
  r = process_range(len(items))
  return items[r.start:r.stop]


def _fail(name: str, index: int, e: Exception) -> ValueError:
  return ValueError(f"{name}: example {index} cannot be read or preprocessed "
                    f"({type(e).__name__}: {e}); an evaluation set must be complete: "
                    "re-prepare the dataset or choose another split")


def _pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))


class LazyImages:
  """Images of some examples of a random-access source, preprocessed when sliced.

  `source[i]['image']` is run through `pp` (an op function on {'image': ...}); slicing returns
  the stacked images, decoded in a thread pool. A failing example is an error: an evaluation
  set is never silently shortened.
  """

  def __init__(self, source, indices: Sequence[int], pp: Callable, name: str):
    self.source, self.indices, self.pp, self.name = source, list(indices), pp, name
    self._pool = _pool()

  def __len__(self) -> int:
    return len(self.indices)

  def load(self, index: int) -> np.ndarray:
    try:
      return np.asarray(self.pp({"image": self.source[index]["image"]},
                                np.random.default_rng(index))["image"])
    except Exception as e:  # pylint: disable=broad-except
      raise _fail(self.name, index, e) from e

  def __getitem__(self, item: slice) -> np.ndarray:
    return np.stack(list(self._pool.map(self.load, self.indices[item])))

  @property
  def row_shape(self) -> tuple[int, ...]:
    """The shape of one preprocessed image (from this process's first example, else any)."""
    return self.load(self.indices[0] if self.indices else 0).shape


class LazyLabels:
  """Integer labels of some examples of a tfds data source, read when first needed.

  Reading a record costs its whole size (the image included), so a million-example training
  split is not read at start: a slice reads (and keeps) the labels of its rows only, e.g. right
  after their images, and `np.asarray(labels)` reads whatever is still missing.
  """

  def __init__(self, records, indices: Sequence[int], label_key: str, name: str):
    self.records, self.indices, self.label_key, self.name = records, list(indices), label_key, name
    self._values = np.zeros(len(self.indices), np.int64)
    self._read = np.zeros(len(self.indices), bool)
    self._pool = _pool()

  def __len__(self) -> int:
    return len(self.indices)

  def _label(self, index: int) -> int:
    try:
      return int(sources.lookup(self.records[index], self.label_key))
    except Exception as e:  # pylint: disable=broad-except
      raise _fail(self.name, index, e) from e

  def __getitem__(self, item: slice) -> np.ndarray:
    rows = np.arange(len(self.indices))[item]
    missing = rows[~self._read[rows]]
    self._values[missing] = list(self._pool.map(self._label, [self.indices[r] for r in missing]))
    self._read[missing] = True
    return self._values[rows].copy()

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    del copy  # Always a new array.
    return self[:].astype(dtype or np.int64)



@dataclasses.dataclass
class EvalSet:
  total: int                     # examples over all processes
  offset: int                    # dataset index of this process's first example
  images: Any                    # this process's images: uint8 array [n, H, W, 3] or LazyImages
  labels: Any = None             # this process's int labels [n]: an array or LazyLabels
  captions: list[list[str]] | None = None   # this process's captions, one list per image
  regions: list[list[dict]] | None = None   # this process's regions (shapes), one list per image
  classnames: list[str] | None = None


def shapes_set(task: str, split: str = "test", seed: int = 0, num_examples: int | None = None,
               image_size: int = 64, whole: bool = False) -> EvalSet:
  """A shapes classification task (SHAPES_CLASSIFICATION) or 'shapes' (captions); with
  `whole`, this process holds the whole set rather than its share."""
  if task not in SHAPES_CLASSIFICATION + ("shapes",):
    raise ValueError(f"unknown shapes dataset {task!r}; known: "
                     f"{list(SHAPES_CLASSIFICATION + ('shapes',))}")
  if split not in shapes.SPLITS:
    raise ValueError(f"unknown shapes split {split!r}; known: {list(shapes.SPLITS)}")
  total = num_examples or SHAPES_SIZE
  local = range(total) if whole else process_range(total)
  if task == "shapes":  # Captioned images: the split's own mix of one and two objects.
    examples = [shapes.draw(seed, split, i, image_size) for i in local]
  else:
    examples, labels = zip(*[shapes.draw_task(task, seed, split, i, image_size)
                             for i in local]) if len(local) else ((), ())
  images = (np.stack([e["image"] for e in examples]) if examples
            else np.zeros((0, image_size, image_size, 3), np.uint8))
  out = EvalSet(total, local.start, images)
  if task == "shapes":
    out.captions = [e["captions"] for e in examples]
    out.regions = [e["regions"] for e in examples]
  else:
    out.labels = np.array(labels, np.int64)
    out.classnames = shapes.task_classnames(task)
  return out


def tfds_set(dataset: str, split: str, *, pp: str, data_dir: str | None = None,
             num_examples: int | None = None, image_key: str = "image",
             label_key: str | None = "label", caption_key: str | None = None,
             whole: bool = False) -> EvalSet:
  """The first `num_examples` (default all) of a prepared tfds split, with labels (and the
  dataset's class names, '_' read as ' ') or captions; with `whole`, this process holds the
  whole set rather than its share."""
  src = sources.TfdsSource(dataset, split, data_dir=data_dir, image_key=image_key)
  total = min(len(src), num_examples or len(src))
  local = range(total) if whole else process_range(total)
  images = LazyImages(src, local, ops.parse(pp), f"{dataset}[{split}]")
  out = EvalSet(total, local.start, images)
  if caption_key:
    out.captions = []
    for i in local:  # Images stay encoded: this pass costs no decoding.
      caps = sources.lookup(src.source[i], caption_key)
      caps = [caps] if isinstance(caps, (str, bytes)) else list(caps)
      out.captions.append([c.decode() if isinstance(c, bytes) else str(c) for c in caps])
  else:
    out.classnames = _label_names(src, label_key)
    out.labels = LazyLabels(src.source, local, label_key, f"{dataset}[{split}]")
  return out


def _label_names(src: sources.TfdsSource, label_key: str) -> list[str]:
  feature = sources.lookup(src.info.features, label_key)
  names = getattr(feature, "names", None)
  if not names:
    raise ValueError(f"{src.name}: feature {label_key!r} is not a ClassLabel with names; set "
                     "label_key to the class label feature")
  return [n.replace("_", " ") for n in names]


def classnames(dataset: str, split: str = "train", data_dir: str | None = None,
               label_key: str = "label") -> list[str]:
  """The class names of a shapes task, or of a tfds dataset's label feature ('_' read as ' ')."""
  if dataset.startswith("shapes"):
    return shapes.task_classnames(dataset)
  return _label_names(sources.TfdsSource(dataset, split, data_dir=data_dir), label_key)


def load(dataset: str, *, split: str | None = None, kind: str, image_size: int = 64,
         pp: str | None = None, seed: int = 0, num_examples: int | None = None,
         data_dir: str | None = None, image_key: str = "image", label_key: str = "label",
         caption_key: str | None = "captions/text", whole: bool = False) -> EvalSet:
  """An EvalSet of `kind` 'labels' or 'captions' for a shapes task or a tfds dataset name
  (with `whole`, the whole set on every process: reference captions for corpus metrics).

  `pp` (tfds only) must produce images of one size; default `decode|resize(image_size)`.
  """
  if dataset.startswith("shapes"):
    return shapes_set(dataset, split or "test", seed, num_examples, image_size, whole)
  return tfds_set(dataset, split or "test", pp=pp or f"decode|resize({image_size})",
                  data_dir=data_dir, num_examples=num_examples, image_key=image_key,
                  label_key=label_key if kind == "labels" else None,
                  caption_key=caption_key if kind == "captions" else None, whole=whole)


def load_train_and_test(dataset: str, *, train_split: str | None, split: str | None,
                        num_train_examples: int | None, num_examples: int | None,
                        **kw) -> tuple[EvalSet, EvalSet]:
  """A probe's labelled sets: the first `num_train_examples` of `train_split` (default: shapes'
  'validation', a tfds dataset's 'train') and the first `num_examples` of `split`."""
  default_train = "validation" if dataset.startswith("shapes") else "train"
  return (load(dataset, split=train_split or default_train, kind="labels",
               num_examples=num_train_examples, **kw),
          load(dataset, split=split, kind="labels", num_examples=num_examples, **kw))
