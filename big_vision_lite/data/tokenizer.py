"""Tokenizers: texts -> int32 token ids [N, max_len], 0-padded, the end token kept when truncating.

Two kinds behind one interface (`Tokenizer`), chosen by `get(spec)`:
- SentencePiece (`spec` = a `.model` file), with big_vision's conventions: lower-cased, EOS
  appended, no BOS. Ids: 0 = padding, 1 = end of sentence, 2 = unknown. `SHAPES_MODEL` ships
  with the package (trained on the shapes caption corpus); `train` builds a model from any text.
  These are also SigLIP 2's conventions for Gemma's 256k `tokenizer.model` (pad 0, eos 1, bos 2
  never added, unk 3, byte fallback): pass that file, with `model.text.max_len=64`.
- CLIP's byte-level BPE (`spec` = `'clip'`, a CLIP-style merges file `.txt.gz`, or a Hugging Face
  `tokenizer.json`), giving the ids open_clip's tokenizer gives: text cleaned with ftfy, HTML
  entities unescaped, whitespace collapsed, lower-cased; `<start_of_text>` ... `<end_of_text>`,
  context 77 by default. `'clip'` is the vocabulary of OpenAI's CLIP (49,408 tokens), shipped
  with the package (`assets/bpe_simple_vocab_16e6.txt.gz`, MIT licence beside it).
"""

import abc
import functools
import gzip
import html
import io
import os
from typing import Iterable

import ftfy
import numpy as np
import sentencepiece as spm
import tokenizers

from big_vision_lite import errors

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
SHAPES_MODEL = os.path.join(ASSETS, "shapes_sp.model")
CLIP_VOCAB = os.path.join(ASSETS, "bpe_simple_vocab_16e6.txt.gz")
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # sentencepiece; CLIP pads with 0 too
CLIP_CONTEXT = 77
CLIP_VOCAB_SIZE = 49_408  # 256 bytes, the same ending a word, 48,894 merges, 2 special tokens
# CLIP's pre-tokenization: contractions, letter runs, single digits, runs of anything else
# (whitespace separates and is dropped).
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_CLIP_SPECIALS = (("<start_of_text>", "<end_of_text>"), ("<|startoftext|>", "<|endoftext|>"))
_END_OF_WORD = "</w>"


class TokenizerError(errors.Error, ValueError):
  """A tokenizer spec or file that cannot be used: the message says which and what would do."""


class TokenizerNotFound(TokenizerError, FileNotFoundError):
  """The tokenizer file does not exist."""


class Tokenizer(abc.ABC):
  """Texts -> int32 ids [N, max_len], padded with 0; truncation keeps the end token last."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (the text tower's embedding table needs at least this many rows)."""

  @abc.abstractmethod
  def encode(self, texts: list[str], max_len: int) -> np.ndarray:
    """N texts -> int32 [N, max_len]."""

  @abc.abstractmethod
  def decode(self, ids: np.ndarray) -> list[str]:
    """[N, L] ids -> N texts, without padding and special tokens."""


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece `.model`: lower-cased ids + EOS, truncated keeping EOS, padded with `pad`
  (0; big_vision's released SigLIP models were trained with 1, the EOS id)."""

  def __init__(self, model: str = SHAPES_MODEL, pad: int = PAD_ID):
    self.pad = pad
    if not os.path.exists(model):
      raise TokenizerNotFound(
          f"sentencepiece model {model!r} not found: pass an existing .model file, or train one "
          "with `python -m big_vision_lite.tools.train_tokenizer --input TEXT --output MODEL`")
    self.model = model
    self.sp = spm.SentencePieceProcessor(model_file=model)
    if self.sp.pad_id() != PAD_ID or self.sp.eos_id() != EOS_ID:
      raise TokenizerError(f"{model}: expected pad_id={PAD_ID}, eos_id={EOS_ID}, got "
                           f"{self.sp.pad_id()}, {self.sp.eos_id()}; train it with "
                           "tools.train_tokenizer")

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, texts: list[str], max_len: int) -> np.ndarray:
    """Lower-cased token ids + EOS, truncated (keeping EOS last) and padded: int32 [N, max_len]."""
    out = np.full((len(texts), max_len), self.pad, np.int32)
    for i, ids in enumerate(self.sp.encode([t.lower() for t in texts])):
      ids = (ids[:max_len - 1] + [EOS_ID])
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray) -> list[str]:
    """Inverse of `encode`, dropping padding and EOS: [N, L] -> N strings."""
    ids = np.asarray(ids)
    return [self.sp.decode([int(t) for t in row if t not in (self.pad, EOS_ID)]) for row in ids]


def clip_clean(text: str) -> str:
  """CLIP's text cleaning: ftfy, HTML entities unescaped (twice), whitespace runs -> ' ', lower."""
  text = html.unescape(html.unescape(ftfy.fix_text(text)))
  return " ".join(text.split()).lower()


def _byte_chars() -> dict[int, str]:
  """The character byte-level BPE writes each of the 256 bytes as, in CLIP's vocabulary order.

  Printable Latin-1 bytes stand for themselves and come first; the other 68 (control characters,
  space, no-break space, soft hyphen) become U+0100, U+0101, ... in byte order.
  """
  printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE]
  others = [b for b in range(256) if b not in printable]
  return {**{b: chr(b) for b in printable}, **{b: chr(0x100 + i) for i, b in enumerate(others)}}


def _clip_bpe(merges_file: str) -> tokenizers.Tokenizer:
  """CLIP's BPE from its merges file (a version line, then one merge per line; CLIP uses the
  first 48,894): the vocabulary is bytes, bytes ending a word, merges, then the 2 specials."""
  with gzip.open(merges_file, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  n_merges = CLIP_VOCAB_SIZE - 2 * 256 - 2
  merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
  if len(merges) < n_merges or any(len(m) != 2 for m in merges):
    raise TokenizerError(f"{merges_file}: expected a version line and {n_merges} merges of two "
                         "symbols each, like CLIP's bpe_simple_vocab_16e6.txt.gz")
  alphabet = list(_byte_chars().values())
  words = alphabet + [c + _END_OF_WORD for c in alphabet] + ["".join(m) for m in merges]
  words += list(_CLIP_SPECIALS[0])
  hf = tokenizers.Tokenizer(tokenizers.models.BPE(
      vocab={w: i for i, w in enumerate(words)}, merges=merges, end_of_word_suffix=_END_OF_WORD))
  hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(_CLIP_SPLIT), "removed", invert=True),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  hf.add_special_tokens(list(_CLIP_SPECIALS[0]))
  return hf


class ClipTokenizer(Tokenizer):
  """CLIP's byte-level BPE, giving open_clip's ids: [start, ..., end, 0, ...], context 77."""

  def __init__(self, vocab: str = CLIP_VOCAB):
    if not os.path.exists(vocab):
      raise TokenizerNotFound(f"CLIP vocabulary {vocab!r} not found: pass 'clip' for the built-in "
                              "one, or an existing .txt.gz merges file or tokenizer.json")
    self.vocab = vocab
    if vocab.endswith(".json"):
      try:
        self.hf = tokenizers.Tokenizer.from_file(vocab)
      except Exception as e:  # the library raises a bare Exception for malformed files
        raise TokenizerError(f"{vocab}: not a readable tokenizer.json ({e})") from e
    else:
      self.hf = _clip_bpe(vocab)
    # A word's last token carries '</w>': write it as the byte-level space, then decode bytes.
    self.hf.decoder = tokenizers.decoders.Sequence([
        tokenizers.decoders.Replace(_END_OF_WORD, _byte_chars()[ord(" ")]),
        tokenizers.decoders.ByteLevel()])
    for start, end in _CLIP_SPECIALS:
      self.start_id, self.end_id = self.hf.token_to_id(start), self.hf.token_to_id(end)
      if self.start_id is not None and self.end_id is not None:
        break
    else:
      raise TokenizerError(f"{vocab}: no start/end of text tokens; expected one of the pairs "
                           f"{_CLIP_SPECIALS}")

  @property
  def vocab_size(self) -> int:
    return self.hf.get_vocab_size(with_added_tokens=True)

  def encode(self, texts: list[str], max_len: int = CLIP_CONTEXT) -> np.ndarray:
    """[start] + ids of the cleaned text + [end], truncated keeping end last, 0-padded:
    int32 [N, max_len]."""
    out = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
      # One text at a time: encode_batch would start the library's thread pool, which must not
      # be running when data loader workers fork.
      ids = [self.start_id, *self.hf.encode(clip_clean(text), add_special_tokens=False).ids,
             self.end_id]
      if len(ids) > max_len:
        ids = ids[:max_len - 1] + [self.end_id]
      out[i, :len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray) -> list[str]:
    """[N, L] ids -> N cleaned texts; words are separated by spaces, punctuation included."""
    texts = []
    for row in np.asarray(ids).tolist():
      if row and row[0] == self.start_id:
        row = row[1:]
      # Id 0 is also a real token ('!'): only what follows the end token is padding.
      row = row[:row.index(self.end_id)] if self.end_id in row else row
      texts.append(self.hf.decode(row, skip_special_tokens=False).strip())
    return texts


@functools.lru_cache(maxsize=8)
def get(spec: str = SHAPES_MODEL) -> Tokenizer:
  """A cached tokenizer for `spec`: a sentencepiece `.model` path, `'clip'` (CLIP's BPE), or a
  CLIP-style vocabulary: merges `.txt.gz` or `tokenizer.json`. A sentencepiece spec may end in
  `:pad=ID` to pad with ID instead of 0 (`/data/c4_en.model:pad=1` for SigLIP's models)."""
  path, sep, option = spec.rpartition(":pad=")
  if sep:
    if not path.endswith(".model") or not option.isdigit():
      raise TokenizerError(f"tokenizer {spec!r}: `:pad=ID` goes after a sentencepiece .model path, "
                           "e.g. /data/c4_en.model:pad=1")
    return SentencePieceTokenizer(path, pad=int(option))
  if spec == "clip":
    return ClipTokenizer(CLIP_VOCAB)
  if spec.endswith(".model"):
    return SentencePieceTokenizer(spec)
  if spec.endswith((".txt.gz", ".json")):
    return ClipTokenizer(spec)
  raise TokenizerError(f"unknown tokenizer {spec!r}: pass a sentencepiece .model file, 'clip' "
                       "(CLIP's BPE), a CLIP merges file (.txt.gz) or a tokenizer.json")


def train(sentences: Iterable[str], output: str, vocab_size: int = 256,
          model_type: str = "bpe") -> SentencePieceTokenizer:
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
  return SentencePieceTokenizer(output)
