"""Localisation on shapes: referring expressions with the LocCa decoder (a box for a region
caption; accuracy at IoU >= 0.5, the RefCOCO metric) and a dense linear probe on the image
tower's un-pooled tokens (each patch's colour class or background; accuracy and mean IoU)."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.data import shapes
from big_vision_lite.distributed import gather_rows
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators import data, ridge
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.schema import ConfigError


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of boxes [N, 4] (y0, x0, y1, x1) pairwise along N."""
  lo, hi = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def _shapes_only(kind: str, dataset: str) -> None:
  if dataset != "shapes":
    raise ConfigError(f"the {kind} evaluator measures shapes (dataset='shapes'), whose objects "
                      f"have boxes and masks; got {dataset!r}")


class Referring(Evaluator):
  """For one region of each image (its region caption, 'the small red circle'), the box the
  LocCa decoder writes: `acc@0.5` (IoU >= 0.5) and `mean_iou`."""

  kind = "referring"
  benchmark_task = "referring"

  def __init__(self, embedder: Embedder, *, dataset: str = "shapes", split: str = "test",
               num_examples: int | None = None, seed: int = 0, image_size: int = 64,
               max_len: int = 16, tokenizer: str = tok_lib.SHAPES_MODEL, batch_size: int = 256,
               decoder: Any = None):
    _shapes_only(self.kind, dataset)
    if decoder is None:
      raise ConfigError("the referring evaluator reads the LocCa decoder: add objectives.locca "
                        "to the config")
    self.embedder, self.dataset, self.decoder, self.batch_size = (embedder, dataset, decoder,
                                                                  batch_size)
    whole = data.load(dataset, split=split, kind="captions", image_size=image_size, seed=seed,
                      num_examples=num_examples, whole=True)
    self.eval_set = data.load(dataset, split=split, kind="captions", image_size=image_size,
                              seed=seed, num_examples=num_examples)
    picked = [rs[shapes.region_pick(seed, split, i, len(rs))]
              for i, rs in enumerate(whole.regions)]
    self.boxes = np.asarray([r["box"] for r in picked], np.float32)  # [N, 4], every process
    self.tokens = tok_lib.get(tokenizer).encode([r["text"] for r in picked], max_len)
    self._refer = jax.jit(lambda p, img, t: decoder.refer(p, {"img": {"encoded": img}}, t))

  def embed(self, params) -> dict[str, np.ndarray]:
    """Decoded boxes [N, 4] and the true ones [N, 4]."""
    img = self.embedder.images(params, self.eval_set.images, "tokens")  # [N, T, D]
    out = [np.asarray(self._refer(params, jnp.asarray(img[i:i + self.batch_size]),
                                  self.tokens[i:i + self.batch_size]))
           for i in range(0, len(img), self.batch_size)]
    tokens = np.concatenate(out) if out else np.zeros((0, 4), np.int32)
    return {"boxes": self.decoder.vocab.boxes(tokens), "true_boxes": self.boxes}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    overlap = iou(emb["boxes"], emb["true_boxes"])
    prefix = f"referring/{self.dataset}/"
    return {prefix + "acc@0.5": float(np.mean(overlap >= 0.5)),
            prefix + "mean_iou": float(np.mean(overlap))}

  def benchmark_name(self, metric: str) -> str | None:
    return None


def patch_labels(regions: list[list[dict]], image_size: int, grid: int) -> np.ndarray:
  """int [N, grid * grid]: each patch's majority pixel class (shapes.pixel_labels)."""
  side = image_size // grid
  out = []
  for rs in regions:
    pixels = shapes.pixel_labels(rs, image_size)[:grid * side, :grid * side]
    blocks = pixels.reshape(grid, side, grid, side).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    out.append([np.bincount(b, minlength=len(shapes.COLORS) + 1).argmax() for b in blocks])
  return np.asarray(out, np.int64)


class DenseProbe(Evaluator):
  """A linear (ridge) probe on the image tower's un-pooled patch tokens, predicting each patch's
  class: the colour of the object covering most of it, or background (9 classes). Trained on
  `num_train_examples` of shapes' validation split (strength chosen on a held-out fifth),
  measured on `num_examples` of `split`: per-patch `accuracy` and `mean_iou` over classes."""

  kind = "dense_probe"
  benchmark_task = "segmentation"

  def __init__(self, embedder: Embedder, *, dataset: str = "shapes", split: str = "test",
               num_examples: int | None = None, num_train_examples: int = 1024, seed: int = 0,
               image_size: int = 64):
    _shapes_only(self.kind, dataset)
    self.embedder, self.dataset, self.image_size = embedder, dataset, image_size
    self.train_set = data.load(dataset, split="validation", kind="captions",
                               image_size=image_size, seed=seed,
                               num_examples=num_train_examples)
    self.eval_set = data.load(dataset, split=split, kind="captions", image_size=image_size,
                              seed=seed, num_examples=num_examples)
    self.classes = len(shapes.COLORS) + 1

  def _patches(self, params, eval_set) -> tuple[np.ndarray, np.ndarray]:
    tokens = self.embedder.images(params, eval_set.images, "tokens")  # [N, T, D]
    grid = int(np.sqrt(tokens.shape[1]))
    tokens = tokens[:, tokens.shape[1] - grid * grid:]  # Without a class token, if any.
    labels = gather_rows(patch_labels(eval_set.regions, self.image_size, grid))
    return tokens.reshape(-1, tokens.shape[-1]), labels.reshape(-1)

  def embed(self, params) -> dict[str, np.ndarray]:
    """Predicted and true classes of every test patch [M]."""
    x, y = self._patches(params, self.train_set)
    x_test, y_test = self._patches(params, self.eval_set)
    held = np.arange(len(y)) % 5 == 0
    grid_pred = ridge.ridge_predictions(x[~held], y[~held], x[held], self.classes)
    best = int(np.argmax((grid_pred == y[held]).mean(axis=1)))
    pred = ridge.ridge_predictions(x, y, x_test, self.classes)[best]
    return {"predictions": pred, "labels": y_test}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    p, y = emb["predictions"], emb["labels"]
    ious = [np.sum((p == c) & (y == c)) / np.sum((p == c) | (y == c))
            for c in range(self.classes) if np.any((p == c) | (y == c))]
    prefix = f"dense_probe/{self.dataset}/"
    return {prefix + "accuracy": float(np.mean(p == y)), prefix + "mean_iou": float(np.mean(ious))}

  def benchmark_name(self, metric: str) -> str | None:
    return None
