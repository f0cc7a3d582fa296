"""The interface every evaluator implements: embed with the model, then compute metrics.

`embed(params)` does all the work that needs the model and returns arrays that are the same
on every process (what `evaluate --export_embeddings` writes); `metrics(embeddings)` turns
them into `{'<kind>/<dataset>/<metric>': value}` with numpy alone; `run(params)` is both.
The constructor takes the Embedder and keyword options only: its signature is the list of
options `config.evals.<name>` accepts (schema.py checks them when the config loads).
"""

import abc

import numpy as np

from big_vision_lite.evaluators.data import EvalSet


class Evaluator(abc.ABC):
  """One evaluation of a model on one dataset."""

  kind: str             # metric prefix and config type: 'zeroshot', 'retrieval', ...
  benchmark_task: str   # CLIP_benchmark's task name
  dataset: str          # a shapes task or a tfds dataset name
  eval_set: EvalSet     # the set the metrics are measured on (this process's share)

  @abc.abstractmethod
  def embed(self, params) -> dict[str, np.ndarray]:
    """Everything the metrics need from the model, in dataset order, on every process."""

  @abc.abstractmethod
  def metrics(self, embeddings: dict[str, np.ndarray]) -> dict[str, float]:
    """{'<kind>/<dataset>/<metric>': value} from `embed`'s arrays."""

  def run(self, params) -> dict[str, float]:
    """Embeds and measures."""
    return self.metrics(self.embed(params))

  @abc.abstractmethod
  def benchmark_name(self, metric: str) -> str | None:
    """CLIP_benchmark's name for one of our metric names (after the prefix), or None to omit."""

  def benchmark(self, metrics: dict[str, float]) -> dict[str, float]:
    """This evaluator's metrics under CLIP_benchmark's names."""
    prefix, out = f"{self.kind}/{self.dataset}/", {}
    for key, value in metrics.items():
      name = self.benchmark_name(key[len(prefix):]) if key.startswith(prefix) else None
      if name is not None:
        out[name] = value
    return out

  def preview_images(self, count: int = 16) -> np.ndarray:
    """The first `count` images of this process's share of `eval_set` as the model sees them,
    uint8 [n, H, W, 3] (process 0 holds the first images of the set)."""
    return np.asarray(self.eval_set.images[:count])
