"""Zero-shot classification: a class's classifier is the renormalised mean of its prompt embeddings."""

from typing import Sequence

import numpy as np

from big_vision_lite.data import shapes
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.distributed import gather_rows
from big_vision_lite.evaluators import data, prompts, ranking
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder


def classifier_weights(text_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
  """Class-major prompt embeddings [C*T, E] -> L2-normalised template means [C, E]."""
  w = text_embeddings.reshape(num_classes, -1, text_embeddings.shape[-1]).mean(axis=1)
  return w / np.linalg.norm(w, axis=-1, keepdims=True)


def prompt_tokens(dataset: str, classnames: Sequence[str], templates: Sequence[str],
                  canonicalize: bool, tokenizer: str, max_len: int
                  ) -> tuple[list[str], np.ndarray]:
  """Every class's prompts, class-major, and their tokens [C * T, max_len]."""
  post = shapes.with_articles if dataset.startswith("shapes") else (lambda s: s)
  if canonicalize:
    post = lambda s, f=post: prompts.canonicalize(f(s))
  texts = prompts.render(tuple(templates), list(classnames), post)
  return texts, tok_lib.get(tokenizer).encode(texts, max_len)


def class_embeddings(embedder: Embedder, params, tokens: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """The zero-shot classifier [C, E]: each class's renormalised mean prompt embedding (every
  process embeds its share of the prompts)."""
  return classifier_weights(embedder.texts(params, data.local_share(tokens)), num_classes)


class ZeroShot(Evaluator):
  """Zero-shot top-1/top-5/mean per-class recall on a shapes task or a tfds classification set.

  classnames: None (the dataset's own), 'clip' (CLIP's edited names, ImageNet family) or a list.
  templates: 'clip' (the dataset's CLIP prompt set), 'single' ('a photo of a {}.') or a list.
  canonicalize: lower-case prompts and delete punctuation (prompts.canonicalize) before tokenizing.
  """

  kind = "zeroshot"
  benchmark_task = "zeroshot_classification"

  def __init__(self, embedder: Embedder, *, dataset: str, split: str | None = None,
               classnames: str | Sequence[str] | None = None,
               templates: str | Sequence[str] = "clip", canonicalize: bool = False,
               num_examples: int | None = None, seed: int = 0, image_size: int = 64,
               pp: str | None = None, data_dir: str | None = None, image_key: str = "image",
               label_key: str = "label", max_len: int = 16, tokenizer: str = tok_lib.SHAPES_MODEL):
    self.embedder, self.dataset = embedder, dataset
    self.eval_set = data.load(dataset, split=split, kind="labels", image_size=image_size,
                              pp=pp, seed=seed, num_examples=num_examples, data_dir=data_dir,
                              image_key=image_key, label_key=label_key)
    if classnames == "clip":
      classnames = prompts.clip_classnames(dataset)
    self.classnames = list(classnames or self.eval_set.classnames)
    if len(self.classnames) != len(self.eval_set.classnames):
      raise ValueError(f"{dataset} has {len(self.eval_set.classnames)} classes, but "
                       f"{len(self.classnames)} class names were given")
    self.templates = prompts.templates_for(dataset, templates)
    self.prompts, self.tokens = prompt_tokens(dataset, self.classnames, self.templates,
                                              canonicalize, tokenizer, max_len)

  def embed(self, params) -> dict[str, np.ndarray]:
    """Image embeddings [N, E], their labels [N], class classifiers [C, E] (dataset order)."""
    return {"image_embeddings": self.embedder.images(params, self.eval_set.images),
            "labels": gather_rows(self.eval_set.labels),
            "class_embeddings": class_embeddings(self.embedder, params, self.tokens,
                                                 len(self.classnames)),
            "classnames": np.array(self.classnames)}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    scores = emb["image_embeddings"] @ emb["class_embeddings"].T
    return {f"zeroshot/{self.dataset}/{k}": v
            for k, v in ranking.accuracy_metrics(scores, emb["labels"]).items()}

  def benchmark_name(self, metric: str) -> str | None:
    return {"top1": "acc1", "top5": "acc5"}.get(metric, metric)
