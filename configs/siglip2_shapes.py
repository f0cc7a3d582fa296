"""SigLIP 2's recipe on the embedded shapes dataset: the sigmoid loss and LocCa (the decoder
reads the image tower's tokens and learns captioning, referring expressions and grounded
captioning) at equal weight from the start, then for the last 20% of training SILC (local views
to an EMA teacher's global view) and TIPS (masked patches to the teacher's), weights 1.0 and 0.25
times the paper's size factor. The comparison with SigLIP alone at the same steps is in
docs/siglip2.md; self-distillation in docs/siglip2_distillation.md.

  python -m big_vision_lite.train --config configs/siglip2_shapes.py --workdir /tmp/siglip2_shapes
  # SigLIP alone, same everything else:
  python -m big_vision_lite.train --config configs/siglip2_shapes.py --workdir /tmp/siglip \\
    --config.objectives="{'contrastive': {}}"
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


SIZE_FACTOR = 0.25  # SigLIP 2's factor for B (L 0.5, So400m 1.0, g 0.5).
HEAD = dict(head_dim=1024, head_hidden=256, head_bottleneck=64)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_shapes.py"))
  c.objectives = dict(
      contrastive=dict(weight=1.0),  # config.loss: sigmoid
      # Decoder: the text tower's width, heads and MLP; half its depth (at least 1 block).
      # Boxes: 100 location tokens per coordinate; captions predicted in parallel half the time.
      locca=dict(weight=1.0, loc_bins=100, parallel=0.5),
      # From 80% of training, against the EMA teacher (config.teacher): weights 1.0 and 0.25
      # times the paper's size factor (B 0.25, L 0.5, So400m 1.0, g 0.5; this tower is smaller
      # than B: B's). DINO's loss settings (objectives/teacher.py), a head scaled to the model.
      silc=dict(weight=1.0 * SIZE_FACTOR, start=0.8, **HEAD),
      tips=dict(weight=0.25 * SIZE_FACTOR, start=0.8, mask_ratio=0.5, **HEAD),
  )
  # SigLIP 2 / SILC: 8 local views of 0.05-0.4 of the area, a global view of 0.4-1.0; local
  # views at 32 px (2x2 patches; the global view is the model's 48 px, 3x3).
  c.teacher = dict(momentum=0.996, global_area=(0.4, 1.0), local_area=(0.05, 0.4),
                   local_views=8, local_size=32)
  n = 512
  c.evals.update(
      probe_size=dict(type="linear_probe", dataset="shapes_size", num_examples=n,
                      num_train_examples=2048),
      probe_position=dict(type="linear_probe", dataset="shapes_position", num_examples=n,
                          num_train_examples=2048),
      dense_probe=dict(type="dense_probe", dataset="shapes", num_examples=n,
                       num_train_examples=1024),
      referring=dict(type="referring", dataset="shapes", num_examples=n),
      captioning=dict(type="captioning", dataset="shapes", num_examples=n),
  )
  return c
