"""The base config of the laptop ablations in this directory: configs/siglip_shapes.py (the
default shapes recipe, batch 128) for a fixed number of examples seen, evaluated once, at the
end, on the tasks the ablations report. A plain config:

  python -m big_vision_lite.train --config configs/sweeps/shapes_ablation.py --workdir DIR

Argument: `examples=N` (the run length in examples seen; default 64000 = 500 steps of 128).
The warmup is 10% of the run, in examples, so it stays the same share of the run at any batch
size.
"""

import os

import ml_collections

from big_vision_lite import config as config_lib

EXAMPLES = 64_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, {"examples"}, "configs/sweeps/shapes_ablation.py")
  examples = int(args.get("examples", EXAMPLES))
  c = config_lib.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "siglip_shapes.py"))
  c.total_steps = None
  c.total_examples = examples
  c.schedule = dict(warmup_examples=examples // 10, decay_type="cosine")
  c.log_training_steps = 25
  c.ckpt_steps = 250                # A stopped run loses at most a few minutes.
  c.keep_ckpts = 1
  c.eval_steps = 1_000_000          # Evaluated at the end only.
  c.evals = dict(
      zeroshot_shape=dict(type="zeroshot", dataset="shapes_shape", num_examples=512),
      zeroshot_combo=dict(type="zeroshot", dataset="shapes_combo_heldout", num_examples=512),
      retrieval=dict(type="retrieval", dataset="shapes", num_examples=512),
      fewshot=dict(type="fewshot", dataset="shapes_shape", num_examples=512,
                   num_train_examples=2048, shots=(10,), seeds=3),
  )
  return c
