"""SigLIP ViT-B/16 + B text at 224 px, 64 tokens, on image-text tar shards.

  python -m big_vision_lite.train --workdir DIR \\
    --config 'configs/siglip_b16.py:shards=/data/cc12m/shards-{00000..01242}.tar,tokenizer=/data/sp32k.model'

The argument is comma-free `key=value` pairs joined by ',': `shards` (a directory, glob or brace
range of img2dataset-style tar shards; required), `tokenizer` (a sentencepiece .model; default:
the small shapes tokenizer, for smoke tests only), `vocab` (its size; default 32000 when a
tokenizer is given). The recipe: sigmoid loss, t' = log 10, b = -10, Adam b2 = 0.95, lr 1e-3,
wd 1e-4, warmup then cosine, batch 32k, bfloat16 matmuls.
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, {"shards", "tokenizer", "vocab"}, "configs/siglip_b16.py")
  if "shards" not in args:
    raise config_lib.ConfigError("configs/siglip_b16.py needs shards=PATTERN, e.g. --config "
                                 "'configs/siglip_b16.py:shards=/data/shards-{00000..00099}.tar'")
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_b16_shapes.py"))
  c.batch_size = 32_768
  c.total_examples = 9_000_000_000  # SigLIP B/16's 9B examples seen; set total_steps to shorten
  c.total_steps = None
  c.ckpt_steps = 1000
  c.keep_ckpts = 3
  c.schedule = dict(warmup_steps=5000, decay_type="cosine")
  tokenizer = args.get("tokenizer")
  c.model.text.vocab_size = int(args.get("vocab", 32_000 if tokenizer else 256))
  c.input = dict(
      data=dict(name="tar", pattern=args["shards"]),
      pp=("decode|resize(224)|value_range(-1,1)|choice(inkey='captions',outkey='text')|"
          f"tokenize(max_len=64,inkey='text',outkey='labels'{f',model={tokenizer!r}' if tokenizer else ''})|"
          "keep('image','labels')"),
      tokenizer=tokenizer,
      seed=0,
      num_workers=16,            # grain worker processes for decode + preprocessing
  )
  return c
