"""Zero-shot classification: a class's classifier is the renormalised mean of its prompt embeddings."""

import numpy as np

from big_vision_lite.data import shapes
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators import prompts


def classifier_weights(text_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
  """Class-major prompt embeddings [C*T, E] -> L2-normalised template means [C, E]."""
  w = text_embeddings.reshape(num_classes, -1, text_embeddings.shape[-1]).mean(axis=1)
  return w / np.linalg.norm(w, axis=-1, keepdims=True)


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """top1, top5 and mean per-class recall from scores [N, C] and int labels [N]."""
  num_classes = scores.shape[1]
  top = np.argsort(-scores, axis=1)
  top1 = top[:, 0] == labels
  out = {"top1": float(np.mean(top1))}
  if num_classes > 5:
    out["top5"] = float(np.mean(np.any(top[:, :5] == labels[:, None], axis=1)))
  present = np.unique(labels)
  out["mean_per_class_recall"] = float(np.mean([np.mean(top1[labels == c]) for c in present]))
  return out


def shapes_task(task: str, seed: int, num_examples: int, image_size: int):
  """(images uint8 [N, H, W, 3], labels [N], classnames) for a shapes zero-shot task."""
  if task not in prompts.SHAPES_TEMPLATES:
    raise ValueError(f"unknown zero-shot task {task!r}; known: {list(prompts.SHAPES_TEMPLATES)}")
  combos = shapes.HELDOUT_COMBOS if task == "shapes_combo_heldout" else shapes.ALL_COMBOS
  examples = [shapes.draw(seed, "test", i, image_size, combos=combos, num_objects=1)
              for i in range(num_examples)]
  images = np.stack([e["image"] for e in examples])
  if task == "shapes_shape":
    return images, np.array([e["shape"] for e in examples]), list(shapes.SHAPES)
  if task == "shapes_color":
    return images, np.array([e["color"] for e in examples]), list(shapes.COLOR_NAMES)
  index = {c: i for i, c in enumerate(combos)}
  labels = np.array([index[(e["shape"], e["color"])] for e in examples])
  return images, labels, [f"{shapes.COLOR_NAMES[c]} {shapes.SHAPES[s]}" for s, c in combos]


class ZeroShot:
  """Zero-shot top-1/top-5/mean-per-class-recall on the shapes tasks."""

  def __init__(self, embedder, *, tasks=tuple(prompts.SHAPES_TEMPLATES), num_examples: int = 512,
               seed: int = 0, image_size: int = 64, max_len: int = 16,
               tokenizer: str = tok_lib.SHAPES_MODEL):
    self.embedder = embedder
    tok = tok_lib.get(tokenizer)
    self.tasks = {}
    for task in tasks:
      images, labels, classnames = shapes_task(task, seed, num_examples, image_size)
      texts = prompts.render(prompts.SHAPES_TEMPLATES[task], classnames, shapes.with_articles)
      self.tasks[task] = (images, labels, len(classnames), tok.encode(texts, max_len))

  def run(self, params) -> dict[str, float]:
    out = {}
    for task, (images, labels, num_classes, tokens) in self.tasks.items():
      weights = classifier_weights(self.embedder.texts(params, tokens), num_classes)
      scores = self.embedder.images(params, images) @ weights.T
      for k, v in accuracy_metrics(scores, labels).items():
        out[f"zeroshot/{task}/{k}"] = v
    return out
