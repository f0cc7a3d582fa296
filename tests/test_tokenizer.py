"""Tokenizers: sentencepiece (round trip, conventions, training one from the command line) and
CLIP's BPE against the ids open_clip's own tokenizer gave (tests/data/clip_tokens.json)."""

import gzip
import json
import os

import numpy as np
import pytest
import tokenizers as hf_tokenizers

from big_vision_lite.data import ops, shapes, tokenizer
from big_vision_lite.tools import train_tokenizer

CLIP_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "clip_tokens.json")


def _clip_cases() -> list[dict]:
  with open(CLIP_FIXTURE, encoding="utf-8") as f:
    return json.load(f)["cases"]


def test_shipped_tokenizer_round_trips_captions():
  tok = tokenizer.get()
  captions = [c for i in range(100) for c in shapes.draw(0, "train", i)["captions"]]
  ids = tok.encode(captions, max_len=16)
  assert ids.shape == (len(captions), 16) and ids.dtype == np.int32
  assert tok.decode(ids) == captions
  assert not np.any(ids == tokenizer.UNK_ID)


def test_conventions_lowercase_eos_padding_truncation():
  tok = tokenizer.get()
  ids = tok.encode(["A RED Circle"], max_len=8)[0]
  np.testing.assert_array_equal(ids, tok.encode(["a red circle"], 8)[0])
  n = int(np.sum(ids != tokenizer.PAD_ID))
  assert ids[n - 1] == tokenizer.EOS_ID and np.all(ids[n:] == tokenizer.PAD_ID)
  short = tok.encode(["a red circle to the left of a blue square"], max_len=4)[0]
  assert short[-1] == tokenizer.EOS_ID and tokenizer.PAD_ID not in short


def test_train_tokenizer_command(tmp_path, capsys):
  text = tmp_path / "corpus.txt"
  text.write_text("\n".join(["the quick brown fox jumps over the lazy dog",
                             "a photo of a cat", "a photo of a dog"] * 50))
  out = tmp_path / "sp.model"
  train_tokenizer.main(["--input", str(text), "--output", str(out), "--vocab_size", "60"])
  assert "wrote" in capsys.readouterr().out
  tok = tokenizer.get(str(out))
  assert isinstance(tok, tokenizer.SentencePieceTokenizer)
  assert tok.decode(tok.encode(["a photo of a dog"], 12)) == ["a photo of a dog"]


def test_missing_model_explains_how_to_make_one():
  with pytest.raises(FileNotFoundError, match="train_tokenizer"):
    tokenizer.SentencePieceTokenizer("/nonexistent/sp.model")


def test_clip_ids_equal_open_clip_for_every_fixture_string():
  cases = _clip_cases()
  assert len(cases) >= 30
  tok = tokenizer.get("clip")
  ids = tok.encode([c["text"] for c in cases])  # context 77 by default
  assert ids.shape == (len(cases), tokenizer.CLIP_CONTEXT) and ids.dtype == np.int32
  for case, row in zip(cases, ids):
    assert row.tolist() == case["ids"], case["text"]


def test_clip_vocabulary_and_special_tokens():
  tok = tokenizer.get("clip")
  assert isinstance(tok, tokenizer.ClipTokenizer)
  assert tok.vocab_size == 49_408
  assert (tok.start_id, tok.end_id) == (49_406, 49_407)
  np.testing.assert_array_equal(tok.encode([""], 4), [[49_406, 49_407, 0, 0]])


def test_clip_decode_round_trips():
  tok = tokenizer.get("clip")
  captions = ["a photo of a cat", "Two  DOGS\tplaying in the snow", "café crème", "東京タワーの写真"]
  assert tok.decode(tok.encode(captions)) == [tokenizer.clip_clean(c) for c in captions]
  # Punctuation decodes as separate words, so in general the round trip is exact on ids (decode
  # stops at the first end token, so not for a text that spells one out).
  ids = tok.encode([c["text"] for c in _clip_cases() if "_of_text>" not in c["text"]])
  np.testing.assert_array_equal(tok.encode(tok.decode(ids)), ids)
  # Id 0 is the token '!' as well as padding: only what follows the end token is dropped.
  ids = tok.encode(["wow !→"])
  assert 0 in ids[0, 1:4].tolist() and tok.decode(ids) == ["wow !→"]


def test_clip_truncation_keeps_end_of_text_last():
  tok = tokenizer.get("clip")
  long = next(c for c in _clip_cases() if len(c["text"]) > 300)
  full = long["ids"]
  assert full[-1] == tok.end_id and 0 not in full  # open_clip truncated it at 77
  for max_len in (2, 8, 77):
    np.testing.assert_array_equal(tok.encode([long["text"]], max_len)[0],
                                  full[:max_len - 1] + [tok.end_id])
  np.testing.assert_array_equal(tok.encode(["a photo"], 1), [[tok.end_id]])  # as open_clip


def test_get_selects_by_spec(tmp_path):
  assert isinstance(tokenizer.get(), tokenizer.SentencePieceTokenizer)
  assert isinstance(tokenizer.get(tokenizer.SHAPES_MODEL), tokenizer.SentencePieceTokenizer)
  clip = tokenizer.get("clip")
  assert tokenizer.get(tokenizer.CLIP_VOCAB).vocab_size == clip.vocab_size
  texts = [c["text"] for c in _clip_cases()]
  # A tokenizer.json with the same vocabulary and pipeline gives the same ids.
  path = tmp_path / "tokenizer.json"
  clip.hf.save(str(path))
  from_json = tokenizer.get(str(path))
  assert isinstance(from_json, tokenizer.ClipTokenizer) and from_json is not clip
  np.testing.assert_array_equal(from_json.encode(texts), clip.encode(texts))
  assert from_json.decode(from_json.encode(texts[:3])) == clip.decode(clip.encode(texts[:3]))
  with pytest.raises(tokenizer.TokenizerError, match="'clip'"):
    tokenizer.get("bpe32k")
  with pytest.raises(tokenizer.TokenizerNotFound, match="not found"):
    tokenizer.get(str(tmp_path / "missing.txt.gz"))


def test_unusable_clip_vocabularies_are_named(tmp_path):
  merges = tmp_path / "short.txt.gz"
  with gzip.open(merges, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\ni n\nt h\n")
  with pytest.raises(tokenizer.TokenizerError, match="48894 merges"):
    tokenizer.ClipTokenizer(str(merges))
  no_specials = tmp_path / "tokenizer.json"
  hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE(vocab={"a": 0}, merges=[])).save(
      str(no_specials))
  with pytest.raises(tokenizer.TokenizerError, match="start/end of text"):
    tokenizer.ClipTokenizer(str(no_specials))
  garbage = tmp_path / "garbage.json"
  garbage.write_text("{}")
  with pytest.raises(tokenizer.TokenizerError, match="tokenizer.json"):
    tokenizer.ClipTokenizer(str(garbage))


def test_tokenize_op_takes_the_same_spec():
  op = ops.parse("tokenize(max_len=16, inkey='text', model='clip')")
  out = op({"text": b"A Photo of a CAT"}, np.random.default_rng(0))
  np.testing.assert_array_equal(out["labels"],
                                tokenizer.get("clip").encode(["a photo of a cat"], 16)[0])


def _gemma_like(path) -> str:
  """A small sentencepiece model laid out as Gemma's (SigLIP 2's tokenizer): <pad> 0, <eos> 1,
  <bos> 2, <unk> 3, byte fallback, no dummy prefix, no normalisation."""
  import io
  import sentencepiece as spm
  proto = io.BytesIO()
  corpus = ["a photo of a cat", "a photo of a dog", "two dogs on a red sofa",
            "the quick brown fox jumps over the lazy dog"] * 40
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus), model_writer=proto, vocab_size=300, model_type="bpe",
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
      bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True, add_dummy_prefix=False,
      normalization_rule_name="identity", hard_vocab_limit=False, minloglevel=2)
  path.write_bytes(proto.getvalue())
  return str(path)


def test_gemma_conventions_lowercase_no_bos_eos_kept_pad_0_length_64(tmp_path):
  import sentencepiece as spm
  model = _gemma_like(tmp_path / "gemma_like.model")
  sp = spm.SentencePieceProcessor(model_file=model)
  assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
  tok = tokenizer.get(model)
  texts = ["A Photo of TWO Dogs", "猫 on a sofa", " ".join(["the lazy dog"] * 40)]
  ids = tok.encode(texts, max_len=64)
  assert ids.shape == (3, 64) and 2 not in ids  # never a BOS
  for row, text in zip(ids, texts):
    want = sp.encode(text.lower())
    want = want[:63] + [1] if len(want) >= 64 else want + [1] + [0] * (63 - len(want))
    np.testing.assert_array_equal(row, want)
  assert ids[2, -1] == 1 and 0 not in ids[2]  # truncated: EOS kept last, no padding
  # Unseen characters go through byte pieces, not unk, and decode back.
  assert 3 not in ids[1] and sp.id_to_piece(int(ids[1, 0])).startswith("<0x")
  assert tok.decode(ids[:2]) == [t.lower() for t in texts[:2]]
