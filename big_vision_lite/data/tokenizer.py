"""SentencePiece tokenizer with big_vision's conventions: lower-case, EOS, fixed length, padding.

Ids: 0 = padding, 1 = end of sentence, 2 = unknown. `SHAPES_MODEL` ships with the package
(trained on the shapes caption corpus); `train` builds a model from any text.
"""

import functools
import io
import os
from typing import Iterable

import numpy as np
import sentencepiece as spm

SHAPES_MODEL = os.path.join(os.path.dirname(__file__), "assets", "shapes_sp.model")
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class Tokenizer:
  """Text -> int32 token ids [L], padded with 0 to `max_len`; EOS is kept when truncating."""

  def __init__(self, model: str = SHAPES_MODEL):
    if not os.path.exists(model):
      raise FileNotFoundError(
          f"sentencepiece model {model!r} not found: pass an existing .model file, or train one "
          "with `python -m big_vision_lite.tools.train_tokenizer --input TEXT --output MODEL`")
    self.model = model
    self.sp = spm.SentencePieceProcessor(model_file=model)
    if self.sp.pad_id() != PAD_ID or self.sp.eos_id() != EOS_ID:
      raise ValueError(f"{model}: expected pad_id={PAD_ID}, eos_id={EOS_ID}, got "
                       f"{self.sp.pad_id()}, {self.sp.eos_id()}; train it with tools.train_tokenizer")

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, texts: list[str], max_len: int) -> np.ndarray:
    """Lower-cased token ids + EOS, truncated (keeping EOS last) and 0-padded: int32 [N, max_len]."""
    out = np.full((len(texts), max_len), PAD_ID, np.int32)
    for i, ids in enumerate(self.sp.encode([t.lower() for t in texts])):
      ids = (ids[:max_len - 1] + [EOS_ID])
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray) -> list[str]:
    """Inverse of `encode`, dropping padding and EOS: [N, L] -> N strings."""
    ids = np.asarray(ids)
    return [self.sp.decode([int(t) for t in row if t not in (PAD_ID, EOS_ID)]) for row in ids]


@functools.lru_cache(maxsize=8)
def get(model: str = SHAPES_MODEL) -> Tokenizer:
  """A cached Tokenizer for `model`."""
  return Tokenizer(model)


def train(sentences: Iterable[str], output: str, vocab_size: int = 256,
          model_type: str = "bpe") -> Tokenizer:
  """Trains a lower-cased SentencePiece model on `sentences` and writes it to `output`."""
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter([s.lower() for s in sentences]), model_writer=proto,
      vocab_size=vocab_size, model_type=model_type, hard_vocab_limit=False,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1, character_coverage=1.0,
      minloglevel=2)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "wb") as f:
    f.write(proto.getvalue())
  return Tokenizer(output)
