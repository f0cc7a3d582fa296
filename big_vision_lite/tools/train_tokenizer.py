"""Trains a SentencePiece tokenizer from a text file (one sentence per line).

  python -m big_vision_lite.tools.train_tokenizer --input captions.txt --output my_sp.model
  python -m big_vision_lite.tools.train_tokenizer --shapes --output shapes_sp.model
"""

import argparse

from big_vision_lite.data import shapes, tokenizer


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--input", help="text file, one sentence per line")
  src.add_argument("--shapes", action="store_true", help="use the shapes caption corpus")
  p.add_argument("--output", required=True, help="where to write the .model file")
  p.add_argument("--vocab_size", type=int, default=256)
  p.add_argument("--model_type", default="bpe", choices=["unigram", "bpe", "word", "char"])
  args = p.parse_args(argv)
  if args.shapes:
    sentences = shapes.caption_corpus()
  else:
    with open(args.input, encoding="utf-8") as f:
      sentences = [line.strip() for line in f if line.strip()]
    if not sentences:
      raise SystemExit(f"{args.input}: no non-empty lines to train a tokenizer on")
  tok = tokenizer.train(sentences, args.output, args.vocab_size, args.model_type)
  print(f"wrote {args.output}: vocab_size={tok.vocab_size}, trained on {len(sentences)} sentences")


if __name__ == "__main__":
  main()
