"""SigLIP 2's recipe on the embedded shapes dataset, so far: the sigmoid loss and LocCa (the
decoder reads the image tower's tokens and learns captioning, referring expressions and
grounded captioning), at equal weight from the start. The comparison with SigLIP alone at the
same steps is in docs/siglip2.md.

  python -m big_vision_lite.train --config configs/siglip2_shapes.py --workdir /tmp/siglip2_shapes
  # SigLIP alone, same everything else:
  python -m big_vision_lite.train --config configs/siglip2_shapes.py --workdir /tmp/siglip \\
    --config.objectives="{'contrastive': {}}"
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_shapes.py"))
  c.objectives = dict(
      contrastive=dict(weight=1.0),  # config.loss: sigmoid
      # Decoder: the text tower's width, heads and MLP; half its depth (at least 1 block).
      # Boxes: 100 location tokens per coordinate; captions predicted in parallel half the time.
      locca=dict(weight=1.0, loc_bins=100, parallel=0.5),
  )
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
