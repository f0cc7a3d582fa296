"""SigLIP ViT-B/16 + B text at 224 px (the paper's recipe), on shapes drawn at 224 px.

The model, loss and optimiser are the SigLIP B/16 recipe; the input is the embedded dataset so
that this runs anywhere (accelerator throughput, MFU). For accelerators:
  python benchmarks/train_step.py --config configs/siglip_b16_shapes.py --batch_size 512
  python -m big_vision_lite.train --config configs/siglip_b16_shapes.py --workdir DIR
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_shapes.py"))
  c.batch_size = 512
  c.total_steps = 10_000
  c.log_training_steps = 50
  c.ckpt_steps = 1000
  c.eval_steps = 1000
  c.lr = 1e-3
  c.wd = 1e-4
  c.optax = dict(name="adam", b1=0.9, b2=0.95)
  c.schedule = dict(warmup_steps=1000, decay_type="cosine")
  c.model = dict(
      image=dict(variant="B/16", image_size=224, pool_type="map", posemb="learn",
                 remat_policy="none"),
      text=dict(variant="B", vocab_size=256, max_len=64, pool_type="last", remat_policy="none"),
      out_dim=768,
      temperature_init=10.0,      # t' = log 10
      bias_init=-10.0,            # the paper's b for batches of ~32k; ~ -log(batch) is the prior
      dtype_mm="bfloat16",
  )
  c.input = dict(data=dict(name="shapes", seed=0), tokenizer=None)
  for evaluation in c.evals.values():  # Drawn at the model's resolution (the default).
    evaluation.num_examples = 1024
  return c
