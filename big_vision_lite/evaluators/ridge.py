"""Closed-form ridge regression on one-hot targets: the classifier of the few-shot and linear probes.

Targets are one-hot in {-1, +1}; features and targets are centred on the training set (an
unregularised bias). A strength l2 adds l2 * (mean squared norm of the centred training
features) to the diagonal, so one grid suits features of any scale. One eigendecomposition of
the centred Gram matrix serves every strength of a grid. `Moments` holds the sums that
determine the solution, so a training set can be added up batch by batch and over processes
instead of being held in memory.
"""

import dataclasses

import numpy as np

from big_vision_lite.distributed import sum_over_processes

# Strengths relative to the mean squared norm of the centred training features.
L2_GRID = tuple(float(x) for x in 10.0 ** np.arange(-6, 3.5, 0.5))


def _predict_on_grid(a: np.ndarray, b: np.ndarray, s: np.ndarray, ybar: np.ndarray,
                     scale: float, l2_grid) -> np.ndarray:
  """Classes [len(l2_grid), M] predicted from eigenbasis coordinates a [M, k] of the centred
  evaluation features, projected targets b [k, C] and eigenvalues s [k]."""
  return np.stack([np.argmax(a @ (b / (s + l2 * scale)[:, None]) + ybar, axis=1)
                   for l2 in l2_grid])


def best_strength(held_accuracy: np.ndarray) -> int:
  """Index of the best held-out accuracy over a grid of strengths; ties go to the stronger."""
  return len(held_accuracy) - 1 - int(np.argmax(held_accuracy[::-1]))


class RidgePath:
  """Ridge solutions for every strength of a grid from centred second moments.

  gram: Xc^T Xc [d, d]; xty: Xc^T Yc [d, C]; mean: the features' mean [d]; ybar: the targets'
  mean [C]; scale: the mean squared norm of the centred features.
  """

  def __init__(self, gram: np.ndarray, xty: np.ndarray, mean: np.ndarray, ybar: np.ndarray,
               scale: float, l2_grid=L2_GRID):
    s, self.u = np.linalg.eigh(gram)
    self.s = np.maximum(s, 0.0)
    self.b = self.u.T @ xty
    self.mean, self.ybar, self.scale, self.l2_grid = mean, ybar, scale, tuple(l2_grid)

  def predictions(self, x: np.ndarray) -> np.ndarray:
    """Predicted classes [len(l2_grid), M] of features x [M, d]."""
    a = (np.asarray(x, np.float64) - self.mean) @ self.u
    return _predict_on_grid(a, self.b, self.s, self.ybar, self.scale, self.l2_grid)

  def classifier(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights [d, C], bias [C]) of strength l2_grid[index]: scores are x @ weights + bias."""
    w = self.u @ (self.b / (self.s + self.l2_grid[index] * self.scale)[:, None])
    return w, self.ybar - self.mean @ w


@dataclasses.dataclass
class Moments:
  """Sums over a labelled training set that determine its ridge solution (float64)."""

  count: np.ndarray      # [C] examples per class
  class_sum: np.ndarray  # [C, d] sum of the features of each class
  gram: np.ndarray       # [d, d] sum of x x^T

  @classmethod
  def zeros(cls, dim: int, num_classes: int) -> "Moments":
    return cls(np.zeros(num_classes), np.zeros((num_classes, dim)), np.zeros((dim, dim)))

  @classmethod
  def of(cls, x: np.ndarray, y: np.ndarray, num_classes: int) -> "Moments":
    """The moments of features x [n, d] with labels y [n]."""
    out = cls.zeros(np.shape(x)[1], num_classes)
    out.add(x, y)
    return out

  def add(self, x: np.ndarray, y: np.ndarray) -> None:
    """Adds the examples x [n, d] with labels y [n] (in place)."""
    if not len(x):
      return
    x, y = np.asarray(x, np.float64), np.asarray(y)
    num_classes = len(self.count)
    if y.min() < 0 or y.max() >= num_classes:
      raise ValueError(f"label {int(y.max() if y.max() >= num_classes else y.min())} is outside "
                       f"0..{num_classes - 1}: the dataset has {num_classes} classes")
    self.gram += x.T @ x
    order = np.argsort(y, kind="stable")
    sorted_y = y[order]
    starts = np.flatnonzero(np.r_[True, sorted_y[1:] != sorted_y[:-1]])
    self.class_sum[sorted_y[starts]] += np.add.reduceat(x[order], starts, axis=0)
    self.count += np.bincount(y, minlength=num_classes)

  def __add__(self, other: "Moments") -> "Moments":
    return Moments(self.count + other.count, self.class_sum + other.class_sum,
                   self.gram + other.gram)

  def __sub__(self, other: "Moments") -> "Moments":
    return Moments(self.count - other.count, self.class_sum - other.class_sum,
                   self.gram - other.gram)

  def sum_over_processes(self) -> "Moments":
    """Every process's moments added up (the same on every process)."""
    return Moments(*(sum_over_processes(getattr(self, f.name))
                     for f in dataclasses.fields(self)))

  def solve(self, l2_grid=L2_GRID) -> RidgePath:
    """The ridge solutions of these moments for every strength of `l2_grid`."""
    n = float(self.count.sum())
    if n < 1:
      raise ValueError("ridge regression on an empty training set")
    mean = self.class_sum.sum(axis=0) / n
    gram = self.gram - n * np.outer(mean, mean)
    xty = 2.0 * (self.class_sum - np.outer(self.count, mean)).T  # Xc^T Yc, Y in {-1, +1}
    scale = max(float(np.trace(gram)) / n, 1e-12)
    return RidgePath(gram, xty, mean, 2.0 * self.count / n - 1.0, scale, l2_grid)


def ridge_predictions(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                      num_classes: int, l2_grid=L2_GRID) -> np.ndarray:
  """Predicted classes [len(l2_grid), M] of ridge regressors fit on (x_train [n, d], y_train [n])."""
  x = np.asarray(x_train, np.float64)
  mean = x.mean(axis=0)
  xc = x - mean
  y = 2.0 * np.eye(num_classes)[y_train] - 1.0
  ybar = y.mean(axis=0)
  yc = y - ybar
  scale = max(float(np.mean(np.sum(xc * xc, axis=1))), 1e-12)
  n, d = xc.shape
  if n > d:  # Primal: W = (Xc^T Xc + l I)^-1 Xc^T Yc.
    return RidgePath(xc.T @ xc, xc.T @ yc, mean, ybar, scale, l2_grid).predictions(x_eval)
  # Dual (fewer examples than features): W = Xc^T (Xc Xc^T + l I)^-1 Yc.
  s, u = np.linalg.eigh(xc @ xc.T)
  xe = np.asarray(x_eval, np.float64) - mean
  return _predict_on_grid((xe @ xc.T) @ u, u.T @ yc, np.maximum(s, 0.0), ybar, scale, l2_grid)
