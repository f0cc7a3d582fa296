"""SentencePiece tokenizer: round trip, conventions, training a new one from the command line."""

import numpy as np
import pytest

from big_vision_lite.data import shapes, tokenizer
from big_vision_lite.tools import train_tokenizer


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
  tok = tokenizer.Tokenizer(str(out))
  assert tok.decode(tok.encode(["a photo of a dog"], 12)) == ["a photo of a dog"]


def test_missing_model_explains_how_to_make_one():
  with pytest.raises(FileNotFoundError, match="train_tokenizer"):
    tokenizer.Tokenizer("/nonexistent/sp.model")
