"""Evaluation sets: the shapes tasks and tfds datasets, each process holding its own slice.

An EvalSet carries this process's images (an array, or LazyImages decoded batch by batch),
its labels or captions, and what every process needs to know (total size, class names).
"""

import dataclasses
from typing import Any

import numpy as np

from big_vision_lite.data import ops, shapes, sources
from big_vision_lite.evaluators.common import LazyImages, process_range

SHAPES_CLASSIFICATION = ("shapes_shape", "shapes_color", "shapes_combo_heldout")
SHAPES_SIZE = 512  # Default number of examples drawn from a shapes split.


@dataclasses.dataclass
class EvalSet:
  total: int                     # examples over all processes
  offset: int                    # dataset index of this process's first example
  images: Any                    # this process's images: uint8 array [n, H, W, 3] or LazyImages
  labels: np.ndarray | None = None          # this process's int labels [n]
  captions: list[list[str]] | None = None   # this process's captions, one list per image
  classnames: list[str] | None = None


def _shapes_examples(task: str, split: str, seed: int, indices: range, image_size: int):
  if task == "shapes":  # Captioned images: the split's own mix of one and two objects.
    return [shapes.draw(seed, split, i, image_size) for i in indices]
  combos = shapes.HELDOUT_COMBOS if task == "shapes_combo_heldout" else shapes.ALL_COMBOS
  return [shapes.draw(seed, split, i, image_size, combos=combos, num_objects=1)  # One object.
          for i in indices]


def shapes_set(task: str, split: str = "test", seed: int = 0, num_examples: int | None = None,
               image_size: int = 64) -> EvalSet:
  """A shapes classification task (SHAPES_CLASSIFICATION) or 'shapes' (captions)."""
  if task not in SHAPES_CLASSIFICATION + ("shapes",):
    raise ValueError(f"unknown shapes dataset {task!r}; known: "
                     f"{list(SHAPES_CLASSIFICATION + ('shapes',))}")
  if split not in shapes.SPLITS:
    raise ValueError(f"unknown shapes split {split!r}; known: {list(shapes.SPLITS)}")
  total = num_examples or SHAPES_SIZE
  local = process_range(total)
  examples = _shapes_examples(task, split, seed, local, image_size)
  images = (np.stack([e["image"] for e in examples]) if examples
            else np.zeros((0, image_size, image_size, 3), np.uint8))
  out = EvalSet(total, local.start, images)
  if task == "shapes":
    out.captions = [e["captions"] for e in examples]
  elif task == "shapes_combo_heldout":
    index = {c: i for i, c in enumerate(shapes.HELDOUT_COMBOS)}
    out.labels = np.array([index[(e["shape"], e["color"])] for e in examples], np.int64)
    out.classnames = [f"{shapes.COLOR_NAMES[c]} {shapes.SHAPES[s]}"
                      for s, c in shapes.HELDOUT_COMBOS]
  else:
    key, names = (("shape", shapes.SHAPES) if task == "shapes_shape"
                  else ("color", shapes.COLOR_NAMES))
    out.labels = np.array([e[key] for e in examples], np.int64)
    out.classnames = list(names)
  return out


def tfds_set(dataset: str, split: str, *, pp: str, data_dir: str | None = None,
             num_examples: int | None = None, image_key: str = "image",
             label_key: str | None = "label", caption_key: str | None = None) -> EvalSet:
  """The first `num_examples` (default all) of a prepared tfds split, with labels (and the
  dataset's class names, '_' read as ' ') or captions."""
  src = sources.TfdsSource(dataset, split, data_dir=data_dir, image_key=image_key)
  total = min(len(src), num_examples or len(src))
  local = process_range(total)
  images = LazyImages(src, local, ops.parse(pp), f"{dataset}[{split}]")
  out = EvalSet(total, local.start, images)
  records = (src.source[i] for i in local)  # Images stay encoded: this pass is cheap.
  if caption_key:
    out.captions = []
    for r in records:
      caps = sources.lookup(r, caption_key)
      caps = [caps] if isinstance(caps, (str, bytes)) else list(caps)
      out.captions.append([c.decode() if isinstance(c, bytes) else str(c) for c in caps])
  else:
    feature = sources.lookup(src.info.features, label_key)
    names = getattr(feature, "names", None)
    if not names:
      raise ValueError(f"{dataset}: feature {label_key!r} is not a ClassLabel with names; set "
                       "label_key to the class label feature")
    out.classnames = [n.replace("_", " ") for n in names]
    out.labels = np.array([int(sources.lookup(r, label_key)) for r in records], np.int64)
  return out


def load(dataset: str, *, split: str | None = None, kind: str, image_size: int = 64,
         pp: str | None = None, seed: int = 0, num_examples: int | None = None,
         data_dir: str | None = None, image_key: str = "image", label_key: str = "label",
         caption_key: str | None = "captions/text") -> EvalSet:
  """An EvalSet of `kind` 'labels' or 'captions' for a shapes task or a tfds dataset name.

  `pp` (tfds only) must produce images of one size; default `decode|resize(image_size)`.
  """
  if dataset.startswith("shapes"):
    return shapes_set(dataset, split or "test", seed, num_examples, image_size)
  return tfds_set(dataset, split or "test", pp=pp or f"decode|resize({image_size})",
                  data_dir=data_dir, num_examples=num_examples, image_key=image_key,
                  label_key=label_key if kind == "labels" else None,
                  caption_key=caption_key if kind == "captions" else None)
