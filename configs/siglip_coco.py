"""SigLIP ViT-B/16 + B text on COCO captions from tfds (ArrayRecord, read without TensorFlow).

  python -m big_vision_lite.tools.prepare_tfds coco_captions --data_dir /data/tfds  # once
  python -m big_vision_lite.train --workdir DIR \\
    --config 'configs/siglip_coco.py:data_dir=/data/tfds,tokenizer=/data/sp32k.model'

Argument: ','-joined key=value pairs: `data_dir` (where coco_captions was prepared; default
tfds's own), `tokenizer` (sentencepiece .model; default the small shapes tokenizer), `vocab`.
COCO has 5 captions per image; each step picks one at random.
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, {"data_dir", "tokenizer", "vocab"}, "configs/siglip_coco.py")
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_b16_shapes.py"))
  c.batch_size = 1024
  c.total_steps = 20_000           # ~170 epochs of COCO train2014 (118k images)
  c.schedule = dict(warmup_steps=1000, decay_type="cosine")
  tokenizer = args.get("tokenizer")
  c.model.text.vocab_size = int(args.get("vocab", 32_000 if tokenizer else 256))
  c.model.bias_init = -7.0         # ~ -log(batch 1024)
  tok_arg = f",model={tokenizer!r}" if tokenizer else ""
  c.input = dict(
      data=dict(name="coco_captions", split="train", data_dir=args.get("data_dir"),
                caption_key="captions/text"),
      pp=("decode|inception_crop(224, area_min=50)|flip_lr|value_range(-1,1)|"
          "choice(inkey='captions',outkey='text')|"
          f"tokenize(max_len=64,inkey='text',outkey='labels'{tok_arg})|keep('image','labels')"),
      tokenizer=tokenizer,
      seed=0,
      num_workers=16,
  )
  # COCO retrieval on the 5k test images (25k captions), resized as in training.
  c.evals.retrieval_coco = dict(type="retrieval", dataset="coco_captions", split="test",
                                data_dir=args.get("data_dir"), caption_key="captions/text",
                                pp="decode|resize(224)", every_steps=5000)
  return c
