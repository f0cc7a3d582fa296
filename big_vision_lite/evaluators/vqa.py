"""Visual question answering with the `vlm` objective's language model: greedy answers on
held-out images, exact match after normalising (data/instruct.normalize).

On shapes: `num_examples` `split` images (all colour-shape pairs), every question type that
applies to each (data/instruct.QUESTION_TYPES), and `heldout_examples` one-object images of the
colour-shape pairs that training never shows (shapes.HELDOUT_COMBOS). Metrics:
`vqa/shapes/<type>` (accuracy per question type), `vqa/shapes/all` (over all questions of the
split's images), `vqa/shapes/heldout` and `vqa/shapes/heldout_<type>` (the held-out pairs'
images).

Every process answers the whole set (one device each): the set is small, and generation is a
loop of full forward passes (models/generate.greedy).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.config import ConfigError
from big_vision_lite.data import instruct, ops, shapes
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.data import EvalSet
from big_vision_lite.evaluators.embedder import Embedder


class VQA(Evaluator):
  """Accuracy of the `vlm` objective's greedy answers per question type (see module)."""

  kind = "vqa"
  benchmark_task = "vqa"

  def __init__(self, embedder: Embedder, *, vlm: Any = None, dataset: str = "shapes",
               split: str = "validation", num_examples: int = 128, heldout_examples: int = 64,
               seed: int = 0, image_size: int = 64, tokenizer: str = tok_lib.SHAPES_MODEL,
               batch_size: int = 256):
    if dataset != "shapes":
      raise ConfigError(f"the vqa evaluator asks questions about `shapes` images; got "
                        f"dataset={dataset!r}")
    if vlm is None:
      raise ConfigError("the vqa evaluator answers with objectives.vlm's language model: add "
                        "'vlm' to config.objectives")
    self.embedder, self.dataset, self.batch_size = embedder, dataset, batch_size
    self.term = vlm  # The objective (objectives/vlm.py), given by its evaluator_defaults.
    tok = tok_lib.get(tokenizer)
    images, prompts, answers, types = [], [], [], []
    for part, count in (("", num_examples), ("heldout_", heldout_examples)):
      for i in range(count):
        ex = shapes.draw(seed, split, i, image_size, all_captions=False,
                         **(dict(combos=shapes.HELDOUT_COMBOS, num_objects=1) if part else {}))
        rng = np.random.default_rng((seed, shapes.SPLITS[split], i, 3 + bool(part)))
        for qtype, question, answer in instruct.questions(ex, rng):
          images.append(ex["image"])
          prompts.append(instruct.prompt(tok, question))
          answers.append(answer)
          types.append(part + qtype)
    self.steps = max(len(instruct.prompt(tok, a)) for a in answers)  # Answer ids and EOS.
    longest = max(map(len, prompts))
    if longest + self.steps >= self.term.text_len:
      raise ConfigError(f"vqa: a question of {longest} tokens and an answer of {self.steps} do "
                        f"not fit objectives.vlm.text_len={self.term.text_len}: raise it")
    self.prompts = np.zeros((len(prompts), self.term.text_len), np.int32)
    for row, ids in zip(self.prompts, prompts):
      row[:len(ids)] = ids
    self.lengths = np.array([len(p) for p in prompts], np.int32)
    self.answers, self.types, self.tokenizer = answers, np.array(types), tok
    self.eval_set = EvalSet(len(images), 0, np.stack(images))
    apply, term, steps = embedder.apply, self.term, self.steps

    def answer(params, images, prompts, lengths):
      _, _, aux = apply(params, images, None)
      return term.generate(params, aux["img"]["encoded"], prompts, lengths, steps)

    self._answer = jax.jit(answer)

  def embed(self, params) -> dict[str, np.ndarray]:
    """Generated answer ids [R, steps], one row per (image, question)."""
    out, b = [], self.batch_size
    for start in range(0, len(self.prompts), b):
      rows = slice(start, start + b)
      n = len(self.prompts[rows])
      pad = lambda x: np.concatenate([x, np.zeros((b - n, *x.shape[1:]), x.dtype)])
      out.append(np.asarray(self._answer(
          params, jnp.asarray(pad(ops.value_range(self.eval_set.images[rows]))),
          pad(self.prompts[rows]), pad(self.lengths[rows])))[:n])
    return {"answers": np.concatenate(out)}

  def metrics(self, embeddings: dict[str, np.ndarray]) -> dict[str, float]:
    got = [instruct.normalize(t) for t in self.tokenizer.decode(embeddings["answers"])]
    right = np.array([g == instruct.normalize(a) for g, a in zip(got, self.answers)])
    prefix = f"vqa/{self.dataset}/"
    out = {f"{prefix}{t}": float(np.mean(right[self.types == t])) for t in np.unique(self.types)}
    held = np.char.startswith(self.types, "heldout_")
    out[f"{prefix}all"] = float(np.mean(right[~held]))
    if held.any():
      out[f"{prefix}heldout"] = float(np.mean(right[held]))
    return out

  def benchmark_name(self, metric: str) -> str | None:
    return None
