"""Captioning with the LocCa decoder: greedy captions of an evaluation set, scored by exact
match against any reference (shapes, whose captions come from a small grammar) or by CIDEr
(pycocoevalcap, the COCO caption evaluation's implementation) on a captioned tfds dataset."""

import re
from typing import Any

import jax
import numpy as np

from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators import data
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.schema import ConfigError


def normalise(text: str) -> str:
  """Lower case, punctuation dropped, single spaces (how captions are compared)."""
  return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def cut_at_eos(ids: np.ndarray, tokenizer: tok_lib.Tokenizer) -> np.ndarray:
  """Greedy output [N, L] with everything after each row's first EOS set to padding (a
  sentencepiece tokenizer's decode drops EOS but does not stop there)."""
  ids = np.array(ids)
  if isinstance(tokenizer, tok_lib.SentencePieceTokenizer):
    after = np.cumsum(ids == tok_lib.EOS_ID, axis=1) > 0
    ids[after] = tokenizer.pad
  return ids


def cider(references: list[list[str]], candidates: list[str]) -> float:
  """CIDEr-D of candidate captions against their references (pycocoevalcap's scorer; texts
  normalised here instead of its Java PTB tokenizer)."""
  try:
    from pycocoevalcap.cider.cider import Cider  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError("CIDEr needs pycocoevalcap: pip install -e '.[captions]'") from None
  gts = {i: [normalise(r) for r in refs] for i, refs in enumerate(references)}
  res = {i: [normalise(c)] for i, c in enumerate(candidates)}
  return float(Cider().compute_score(gts, res)[0])


class Captioning(Evaluator):
  """Greedy captions of `dataset` ('shapes' or a captioned tfds dataset) by the decoder of
  objectives.locca: `exact_match` (shapes) or `cider` (tfds), and the captions' mean length."""

  kind = "captioning"
  benchmark_task = "captioning"

  def __init__(self, embedder: Embedder, *, dataset: str = "shapes", split: str | None = None,
               num_examples: int | None = None, seed: int = 0, image_size: int = 64,
               tokenizer: str = tok_lib.SHAPES_MODEL, pp: str | None = None,
               data_dir: str | None = None, image_key: str = "image",
               caption_key: str = "captions/text", decoder: Any = None):
    if decoder is None:
      raise ConfigError("the captioning evaluator reads the LocCa decoder: add "
                        "objectives.locca to the config")
    self.embedder, self.dataset, self.decoder = embedder, dataset, decoder
    self.tokenizer = tok_lib.get(tokenizer)
    kw = dict(split=split, kind="captions", image_size=image_size, pp=pp, seed=seed,
              num_examples=num_examples, data_dir=data_dir, image_key=image_key,
              caption_key=caption_key)
    self.eval_set = data.load(dataset, **kw)
    # Every process scores every caption: it holds all references (images stay unread).
    self.references = (self.eval_set.captions if jax.process_count() == 1
                       else data.load(dataset, whole=True, **kw).captions)
    self._caption = decoder.caption  # One function object: compiled once with the tower.

  def embed(self, params) -> dict[str, np.ndarray]:
    """Greedy caption ids [N, L] in dataset order."""
    return {"ids": self.embedder.images(params, self.eval_set.images, self._caption)}

  def captions(self, emb: dict[str, np.ndarray]) -> list[str]:
    return self.tokenizer.decode(cut_at_eos(emb["ids"], self.tokenizer))

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    texts = self.captions(emb)
    refs = self.references
    prefix = f"captioning/{self.dataset}/"
    out = {prefix + "length": float(np.mean([len(t.split()) for t in texts]))}
    if self.dataset.startswith("shapes"):
      out[prefix + "exact_match"] = float(np.mean(
          [normalise(t) in {normalise(r) for r in rs} for t, rs in zip(texts, refs)]))
    else:
      out[prefix + "cider"] = cider(refs, texts)
    return out

  def benchmark_name(self, metric: str) -> str | None:
    return None  # CLIP_benchmark has no captioning task.
