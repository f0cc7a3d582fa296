"""Few-shot linear probes: closed-form ridge regression on frozen image representations.

For each seed, every class's pool of training examples is shuffled once: the first
`holdout_per_class` examples are held out to choose the regularisation, the next k are the
k-shot training set (so the shot sets are nested). The classifier is ridge.py's closed-form
ridge regression on one-hot targets, for every strength of its grid; the strength with the
best held-out accuracy (ties: the stronger one) is then scored on the test split.
"""

from typing import Sequence

import numpy as np

from big_vision_lite.distributed import gather_rows
from big_vision_lite.evaluators import data
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.evaluators.ridge import L2_GRID, best_strength, ridge_predictions


def fewshot_accuracy(x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray,
                     y_test: np.ndarray, num_classes: int, shots=(1, 5, 10, 25), seeds: int = 3,
                     holdout_per_class: int = 5, l2_grid=L2_GRID) -> dict[int, np.ndarray]:
  """{k: test accuracy per seed [seeds]} with the strength chosen on held-out pool examples."""
  need = max(shots) + holdout_per_class
  by_class = [np.flatnonzero(y_pool == c) for c in range(num_classes)]
  short = [(c, len(i)) for c, i in enumerate(by_class) if len(i) < need]
  if short:
    raise ValueError(f"few-shot needs {need} pool examples per class ({max(shots)} shots + "
                     f"{holdout_per_class} held out); class {short[0][0]} has {short[0][1]}: "
                     "raise num_train_examples")
  out = {k: np.empty(seeds) for k in shots}
  for seed in range(seeds):
    rng = np.random.default_rng(seed)
    order = [rng.permutation(i) for i in by_class]
    held = np.concatenate([o[:holdout_per_class] for o in order])
    for k in shots:
      train = np.concatenate([o[holdout_per_class:holdout_per_class + k] for o in order])
      x_eval = np.concatenate([x_pool[held], x_test])
      pred = ridge_predictions(x_pool[train], y_pool[train], x_eval, num_classes, l2_grid)
      held_acc = np.mean(pred[:, :len(held)] == y_pool[held], axis=1)
      best = best_strength(held_acc)
      out[k][seed] = np.mean(pred[best, len(held):] == y_test)
  return out


class FewShot(Evaluator):
  """k-shot linear-probe top-1 on a shapes task or a tfds classification dataset.

  The pool is the first `num_train_examples` of `train_split`; the test set the first
  `num_examples` (default all; 512 for shapes) of `split`. `representation`: 'pre_logits' (the
  image tower's output before its projection head) or 'embedding' (the L2-normalised one).
  Reports the mean over seeds (`fewshot/<dataset>/<k>shot`) and the standard deviation
  (`.../<k>shot_std`).
  """

  kind = "fewshot"
  benchmark_task = "fewshot_linear_probe"

  def __init__(self, embedder: Embedder, *, dataset: str, train_split: str | None = None,
               split: str | None = None, shots: Sequence[int] = (1, 5, 10, 25), seeds: int = 3,
               holdout_per_class: int = 5, num_train_examples: int = 2048,
               num_examples: int | None = None, representation: str = "pre_logits",
               seed: int = 0, image_size: int = 64, pp: str | None = None,
               data_dir: str | None = None, image_key: str = "image", label_key: str = "label"):
    self.embedder, self.dataset, self.representation = embedder, dataset, representation
    self.shots, self.seeds, self.holdout = tuple(shots), seeds, holdout_per_class
    self.train_set, self.eval_set = data.load_train_and_test(
        dataset, train_split=train_split, split=split, num_train_examples=num_train_examples,
        num_examples=num_examples, image_size=image_size, pp=pp, seed=seed, data_dir=data_dir,
        image_key=image_key, label_key=label_key)

  def embed(self, params) -> dict[str, np.ndarray]:
    """Pool and test representations with their labels."""
    rep = self.representation
    return {"train_embeddings": self.embedder.images(params, self.train_set.images, rep),
            "train_labels": gather_rows(self.train_set.labels),
            "test_embeddings": self.embedder.images(params, self.eval_set.images, rep),
            "test_labels": gather_rows(self.eval_set.labels)}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    acc = fewshot_accuracy(emb["train_embeddings"], emb["train_labels"], emb["test_embeddings"],
                           emb["test_labels"], len(self.eval_set.classnames), self.shots,
                           self.seeds, self.holdout)
    out = {}
    for k, a in acc.items():
      out[f"fewshot/{self.dataset}/{k}shot"] = float(np.mean(a))
      out[f"fewshot/{self.dataset}/{k}shot_std"] = float(np.std(a, ddof=1) if len(a) > 1 else 0.)
    return out

  def benchmark_name(self, metric: str) -> str | None:
    """`{k}shot_acc1` and `{k}shot_acc1_std`."""
    return metric.replace("shot", "shot_acc1")
