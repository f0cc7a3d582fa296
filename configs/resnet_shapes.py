"""CLIP's modified ResNet image tower on the embedded shapes dataset: clip_shapes with the ViT
swapped for a small ResNet (3-convolution stem, anti-aliased strided blocks, attention pooling).

  python -m big_vision_lite.train --config configs/resnet_shapes.py --workdir /tmp/resnet_shapes
"""

import os

import ml_collections

from big_vision_lite import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "clip_shapes.py"))
  c.model.image = dict(
      type="resnet",          # CLIP's modified ResNet (models/resnet.py) instead of the ViT
      variant="50",           # CLIP's RN50 layout, made small by the two overrides below
      layers=(1, 1, 1, 1),    # blocks per stage (RN50: 3, 4, 6, 3)
      width=8,                # stem width; the last stage has 32 x 8 = 256 channels (RN50: 64)
      num_heads=4,            # attention-pool heads (CLIP: 32 x width / 64)
      image_size=64,
  )
  return c
