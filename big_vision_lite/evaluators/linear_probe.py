"""Linear probe: a ridge classifier on frozen image features of a whole training split, streamed.

The training split (or its first `num_train_examples`) is embedded batch by batch, and each
batch is added into float64 sufficient statistics (ridge.Moments: X^T X, per-class feature
sums and counts) by the process that embedded it; only the features of a held-out sample are
kept: `holdout_fraction` of the split, at most `max_holdout_examples`, drawn with
`holdout_seed` from the dataset indices (the same examples whatever the number of processes).
The statistics are summed over processes. Ridge classifiers (ridge.py) fit on the split minus
the held-out sample, one per strength of ridge.L2_GRID, are scored on it; the best strength
(ties: the stronger) is refit on the whole split, and the test split is streamed through that
one classifier. Memory: the statistics ((d + C) * d float64: 11 MiB for ImageNet's 1000
classes at d = 768), the held-out features and one batch, never the split's features.
"""

from typing import Iterable

import numpy as np

from big_vision_lite.distributed import gather_rows
from big_vision_lite.evaluators import data, ridge
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.evaluators.ranking import accuracy_from_ranks, stable_rank


def holdout_mask(total: int, fraction: float, maximum: int, seed: int) -> np.ndarray:
  """bool [total]: a random `fraction` of the dataset indices (at most `maximum`), by `seed`."""
  count = min(int(round(fraction * total)), maximum)
  if not 0 < count < total:
    raise ValueError(f"the held-out sample has {count} of {total} training examples: it needs "
                     "at least one and must leave some; change holdout_fraction or "
                     "num_train_examples")
  mask = np.zeros(total, bool)
  mask[np.random.default_rng(seed).choice(total, count, replace=False)] = True
  return mask


def accumulate(batches: Iterable[tuple[int, np.ndarray]], labels, offset: int,
               held: np.ndarray, num_classes: int
               ) -> tuple[ridge.Moments | None, np.ndarray, np.ndarray]:
  """Streams (start, features [b, d]) of rows [start, start + b) of a share whose row 0 is
  dataset example `offset` into the moments of every row; keeps the features and labels of the
  rows that `held` [dataset size] marks. Moments are None if no batch came."""
  moments, keep_x, keep_y = None, [], []
  for start, x in batches:
    y = np.asarray(labels[start:start + len(x)])
    if moments is None:
      moments = ridge.Moments.zeros(x.shape[1], num_classes)
    moments.add(x, y)
    mine = held[offset + start:offset + start + len(x)]
    keep_x.append(x[mine])
    keep_y.append(y[mine])
  if moments is None:
    return None, np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
  return moments, np.concatenate(keep_x), np.concatenate(keep_y).astype(np.int64)


def fit(moments: ridge.Moments, held_x: np.ndarray, held_y: np.ndarray,
        l2_grid=ridge.L2_GRID) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
  """(weights [d, C], bias [C], index of the chosen strength, held-out accuracy per strength):
  the strength is chosen by fitting on `moments` minus the held-out examples (which they
  include) and scoring on those; the classifier is then refit on all of `moments`."""
  rest = moments - ridge.Moments.of(held_x, held_y, len(moments.count))
  held_accuracy = np.mean(rest.solve(l2_grid).predictions(held_x) == held_y, axis=1)
  best = ridge.best_strength(held_accuracy)
  w, b = moments.solve((l2_grid[best],)).classifier(0)
  return w, b, best, held_accuracy


class LinearProbe(Evaluator):
  """Linear-probe top-1/top-5/mean per-class recall on a shapes task or a tfds classification
  dataset, trained on the first `num_train_examples` (default all; 512 for shapes) of
  `train_split` and measured on the first `num_examples` of `split`. `representation`:
  'pre_logits' (the image tower's output before its projection head) or 'embedding'. Also
  reports the chosen strength as `log10_l2`.
  """

  kind = "linear_probe"
  benchmark_task = "linear_probe"

  def __init__(self, embedder: Embedder, *, dataset: str, train_split: str | None = None,
               split: str | None = None, num_train_examples: int | None = None,
               num_examples: int | None = None, holdout_fraction: float = 0.2,
               max_holdout_examples: int = 10_000, holdout_seed: int = 0,
               representation: str = "pre_logits", seed: int = 0, image_size: int = 64,
               pp: str | None = None, data_dir: str | None = None, image_key: str = "image",
               label_key: str = "label"):
    self.embedder, self.dataset, self.representation = embedder, dataset, representation
    self.train_set, self.eval_set = data.load_train_and_test(
        dataset, train_split=train_split, split=split, num_train_examples=num_train_examples,
        num_examples=num_examples, image_size=image_size, pp=pp, seed=seed, data_dir=data_dir,
        image_key=image_key, label_key=label_key)
    self.num_classes = len(self.eval_set.classnames)
    self.held = holdout_mask(self.train_set.total, holdout_fraction, max_holdout_examples,
                             holdout_seed)

  def embed(self, params) -> dict[str, np.ndarray]:
    """The chosen classifier (`weights` [d, C], `bias` [C], `l2`), the held-out accuracy of
    every strength, and the test examples' labels [N] and ranks of their true class [N]."""
    train = self.train_set
    moments, held_x, held_y = accumulate(
        self.embedder.stream_images(params, train.images, self.representation), train.labels,
        train.offset, self.held, self.num_classes)
    if moments is None:
      raise ValueError(f"linear probe on {self.dataset}: the training split is empty")
    w, b, best, held_accuracy = fit(moments.sum_over_processes(), gather_rows(held_x),
                                    gather_rows(held_y))
    test_ranks, test_labels = [], []
    for start, x in self.embedder.stream_images(params, self.eval_set.images,
                                                self.representation):
      y = np.asarray(self.eval_set.labels[start:start + len(x)], np.int64)
      test_ranks.append(stable_rank(x.astype(np.float64) @ w + b, y))
      test_labels.append(y)
    return {"weights": w, "bias": b, "l2": np.float64(ridge.L2_GRID[best]),
            "holdout_accuracy": held_accuracy,
            "test_ranks": gather_rows(np.concatenate(test_ranks or [np.zeros(0, np.int64)])),
            "test_labels": gather_rows(np.concatenate(test_labels or [np.zeros(0, np.int64)]))}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    prefix = f"linear_probe/{self.dataset}/"
    out = {prefix + k: v for k, v in accuracy_from_ranks(
        emb["test_ranks"], emb["test_labels"], self.num_classes).items()}
    out[prefix + "log10_l2"] = round(float(np.log10(emb["l2"])), 6)  # -5.5, not -5.4999999
    return out

  def benchmark_name(self, metric: str) -> str | None:
    """CLIP_benchmark's `lp_acc1`, `lp_acc5`, `lp_mean_per_class_recall`."""
    return {"top1": "lp_acc1", "top5": "lp_acc5",
            "mean_per_class_recall": "lp_mean_per_class_recall"}.get(metric)
