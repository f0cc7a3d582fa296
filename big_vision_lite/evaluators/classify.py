"""A classifier's top-1 on a labelled set: a model trained with objectives.classify."""

import numpy as np

from big_vision_lite.distributed import gather_rows
from big_vision_lite.evaluators import data
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.evaluators.ranking import accuracy_metrics


class Classify(Evaluator):
  """top-1 (top-5 with more than 5 classes) and mean per-class recall of the model's own
  classification head (objectives.classify) on a shapes task or a tfds classification set."""

  kind = "classify"
  benchmark_task = "classification"

  def __init__(self, embedder: Embedder, *, dataset: str, split: str | None = None,
               num_examples: int | None = None, seed: int = 0, image_size: int = 64,
               pp: str | None = None, data_dir: str | None = None, image_key: str = "image",
               label_key: str = "label"):
    self.embedder, self.dataset = embedder, dataset
    self.eval_set = data.load(dataset, split=split, kind="labels", image_size=image_size, pp=pp,
                              seed=seed, num_examples=num_examples, data_dir=data_dir,
                              image_key=image_key, label_key=label_key)

  def embed(self, params) -> dict[str, np.ndarray]:
    """The head's logits [N, C] and the labels [N], in dataset order."""
    return {"logits": self.embedder.images(params, self.eval_set.images, "logits"),
            "labels": gather_rows(np.asarray(self.eval_set.labels))}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    return {f"classify/{self.dataset}/{k}": v
            for k, v in accuracy_metrics(emb["logits"], emb["labels"]).items()}

  def benchmark_name(self, metric: str) -> str | None:
    return {"top1": "acc1", "top5": "acc5",
            "mean_per_class_recall": "mean_per_class_recall"}.get(metric)
