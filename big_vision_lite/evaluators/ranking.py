"""Ranks with ties broken by index (as a stable sort), and the classification metrics from them.

Breaking ties by index, not in the query's favour, means a collapsed model (all scores equal)
scores at chance, not at 100%.
"""

import numpy as np


def stable_rank(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Position of column target[i] in row i sorted by descending score, ties by column index."""
  mine = scores[np.arange(len(scores)), target][:, None]
  earlier = np.arange(scores.shape[1])[None, :] < target[:, None]
  return np.sum((scores > mine) | ((scores == mine) & earlier), axis=1)


def ranks(scores: np.ndarray, labels: np.ndarray, chunk: int = 4096) -> np.ndarray:
  """Position of the true class in each row sorted by descending score (ties by class index)."""
  out = np.empty(len(labels), np.int64)
  for s in range(0, len(labels), chunk):
    out[s:s + chunk] = stable_rank(scores[s:s + chunk], labels[s:s + chunk])
  return out


def accuracy_from_ranks(rank: np.ndarray, labels: np.ndarray,
                        num_classes: int) -> dict[str, float]:
  """top1, top5 (more than 5 classes) and mean per-class recall (over the classes present)
  from the rank [N] of each example's true class."""
  top1 = rank < 1
  out = {"top1": float(np.mean(top1))}
  if num_classes > 5:
    out["top5"] = float(np.mean(rank < 5))
  out["mean_per_class_recall"] = float(np.mean([np.mean(top1[labels == c])
                                                for c in np.unique(labels)]))
  return out


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """top1, top5 (more than 5 classes) and mean per-class recall from scores [N, C], labels [N]."""
  return accuracy_from_ranks(ranks(scores, labels), labels, scores.shape[1])
