"""SigLIP (sigmoid loss) on the embedded shapes dataset: the default, a few minutes on a laptop CPU.

  python -m big_vision_lite.train --config configs/siglip_shapes.py --workdir /tmp/siglip_shapes

Every key is listed with its meaning in docs/training.md's config table (generated from
big_vision_lite/schema.py, where each key's default, type and allowed values are defined).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                      # parameter init (data has its own seed in input.data.seed)
  c.batch_size = 128              # global batch, split over all devices of all processes
  c.total_steps = 1100            # or total_examples
  c.log_training_steps = 100       # print and write train/* metrics every N steps
  c.ckpt_steps = 500              # checkpoint every N steps (and at the end)
  c.keep_ckpts = 2                # newest checkpoints kept on disk
  c.eval_steps = 275              # run config.evals every N steps (and at the end)
  c.eval_batch_size = 256         # global batch for embedding evaluation sets
  c.grad_accum_steps = 1          # >1: same update as the full batch, micro-batch activations

  c.loss = "sigmoid"              # sigmoid (SigLIP) | softmax (CLIP) | sigmoid_chunked | softmax_local
  c.lr = 1e-3                     # peak learning rate
  c.wd = 1e-4                     # decoupled weight decay (follows the schedule's shape)
  c.grad_clip_norm = 1.0          # global-norm gradient clipping (None to disable)
  c.wd_mults = ((".*/kernel$", 1.0),)  # (regex, mult): weight decay on matrices only
  c.lr_mults = ()                 # (regex, mult) over parameter names; mult 0 freezes
  c.optax = dict(name="adam", b1=0.9, b2=0.95)  # SigLIP's Adam b2
  c.schedule = dict(warmup_steps=60, decay_type="cosine")  # cosine | rsqrt | linear | constant

  c.model = dict(
      # 48 px in 16x16 patches: 9 tokens, one per cell of the 3x3 grid that objects sit on.
      image=dict(variant="mu/16", width=128, depth=3, mlp_dim=512, num_heads=4,
                 image_size=48, pool_type="map", posemb="learn"),
      # max_len 12: captions are at most 11 tokens, plus EOS.
      text=dict(variant="mu", width=128, depth=1, mlp_dim=512, num_heads=4,
                vocab_size=256, max_len=12, pool_type="last"),
      out_dim=128,                # shared embedding size (projection heads)
      temperature_init=10.0,      # t = exp(t'), t' learnable
      # Learnable b (None for none). SigLIP's -10 is the log-prior of a positive pair at batch
      # ~32k; at batch 128 it is ~-log(128) ~ -5 (see docs/training.md and docs/ablations).
      bias_init=-5.0,
      dtype_mm="float32",         # matmul dtype: float32, or bfloat16 on accelerators
  )

  c.input = dict(
      # One source or a list of them (each with an optional `weight`): shapes, or
      # dict(name='tar', pattern='/data/shards-{00000..00099}.tar') with an op string in `pp`.
      data=dict(name="shapes", seed=0),  # drawn at model.image.image_size
      pp=None,                    # op string; None = the built-in shapes stream (no grain)
      tokenizer=None,             # sentencepiece .model; None = the shipped shapes tokenizer
      seed=0,                     # shuffling and augmentation seed (grain pipelines)
      num_workers=0,              # grain worker processes (0: preprocess in the trainer)
  )

  # Evaluations: name -> dict(type=zeroshot|retrieval|fewshot, every_steps=None (eval_steps),
  # dataset=shapes task or tfds name, ...). See the evaluator classes for every option.
  c.evals = dict(
      zeroshot_shape=dict(type="zeroshot", dataset="shapes_shape", num_examples=512),
      zeroshot_color=dict(type="zeroshot", dataset="shapes_color", num_examples=512),
      zeroshot_combo=dict(type="zeroshot", dataset="shapes_combo_heldout", num_examples=512),
      retrieval=dict(type="retrieval", dataset="shapes", num_examples=512),
      fewshot=dict(type="fewshot", dataset="shapes_shape", num_examples=512,
                   num_train_examples=2048, shots=(1, 5, 10, 25), seeds=3),
  )
  c.mesh = (("data", -1),)        # device mesh axes; batch is split over all of them
  c.sharding_rules = ()           # (regex, axis) over parameter names; unmatched = replicated
  return c
