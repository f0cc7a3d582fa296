"""SigLIP 2 ViT-B/16 at 256 px for a cluster: the sigmoid loss and LocCa at equal weight, then
SILC and TIPS against an EMA teacher for the last 20% (docs/siglip2_distillation.md), on
image-text tar shards whose samples may carry `regions` (see docs/siglip2.md for the shard
format and what is still missing: NaFlex, ACID).

  python -m big_vision_lite.train --workdir DIR --config \\
    'configs/siglip2_b16.py:shards=/data/shards-{00000..09999}.tar,tokenizer=/data/gemma.model'

Arguments (comma-separated key=value): `shards` (required: a directory, glob or brace range of
tar shards), `tokenizer` (required: the Gemma sentencepiece .model, 256k pieces), `vocab` (its
size; default 256000). The recipe (paper, section 2): B/16 + B text, 256 px, 64 tokens
(lower-cased, EOS, 0-padded), batch 32k, Adam lr 1e-3 (b2 = 0.95 as SigLIP; the paper gives
none), decoupled wd 1e-4, gradient clip 1, 20k warmup steps then cosine, 40B examples; LocCa's
decoder has the text tower's width, heads and MLP and half its depth (6 blocks), its
cross-entropy over the 256k vocabulary taken 1024 tokens at a time.
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, {"shards", "tokenizer", "vocab"}, "configs/siglip2_b16.py")
  for key, example in (("shards", "/data/shards-{00000..09999}.tar"),
                       ("tokenizer", "/data/gemma.model")):
    if key not in args:
      raise config_lib.ConfigError(f"configs/siglip2_b16.py needs {key}=..., e.g. --config "
                                   f"'configs/siglip2_b16.py:shards=...,tokenizer=...' "
                                   f"({key}={example})")
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_b16_shapes.py"))
  c.batch_size = 32_768
  c.total_examples = 40_000_000_000
  c.total_steps = None
  c.ckpt_steps = 1000
  c.keep_ckpts = 3
  c.lr, c.wd, c.grad_clip_norm = 1e-3, 1e-4, 1.0
  c.optax = dict(name="adam", b1=0.9, b2=0.95)
  c.schedule = dict(warmup_steps=20_000, decay_type="cosine")
  c.model.image.image_size = 256
  c.model.text.max_len = 64
  c.model.text.vocab_size = int(args.get("vocab", 256_000))
  c.objectives = dict(
      contrastive=dict(weight=1.0),
      locca=dict(weight=1.0, loc_bins=100, parallel=0.5, loss_chunk=1024),  # depth: 12 // 2
      # The last 20%: weights 1.0 and 0.25 times B's size factor 0.25; DINO's head and loss
      # settings (the defaults, objectives/teacher.py).
      silc=dict(weight=1.0 * 0.25, start=0.8),
      tips=dict(weight=0.25 * 0.25, start=0.8, mask_ratio=0.5),
  )
  # 8 local views of 0.05-0.4 of the area at 112 px (7x7 patches), one global view of 0.4-1.0
  # at 256 px; a fixed EMA momentum.
  c.teacher = dict(momentum=0.996, global_area=(0.4, 1.0), local_area=(0.05, 0.4),
                   local_views=8, local_size=112)
  c.input = dict(
      data=dict(name="tar", pattern=args["shards"]),
      # Geometric ops move the region boxes; `region` then picks one region per example (none:
      # region_valid = 0, and LocCa trains that example's captioning only).
      pp=("decode|resize(256)|value_range(-1,1)|region|"
          "choice(inkey='captions',outkey='text')|"
          "tokenize(inkey='text',outkey='labels')|"
          "tokenize(inkey='region_text',outkey='region_labels')|"
          "keep('image','labels','region_labels','region_box','region_valid')"),
      tokenizer=args["tokenizer"],
      seed=0,
      num_workers=16,
  )
  c.evals = {}  # Add e.g. a tfds zero-shot set and captioning=dict(type='captioning', ...).
  del arg
  return c
