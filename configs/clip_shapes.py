"""CLIP (softmax loss) on the embedded shapes dataset: siglip_shapes with the loss swapped.

  python -m big_vision_lite.train --config configs/clip_shapes.py --workdir /tmp/clip_shapes
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_shapes.py"))
  c.loss = "softmax"              # symmetric cross-entropy over the global batch
  c.model.bias_init = None        # softmax is invariant to a shared bias: no `b` parameter
  c.model.temperature_init = 10.0  # t = exp(t'); CLIP's 1/0.07 ~ 14.3 works too
  return c
