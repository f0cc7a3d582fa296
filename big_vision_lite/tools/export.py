"""Exports a run's parameters as a big_vision .npz or an open_clip .safetensors state dict.

  python -m big_vision_lite.tools.export --workdir DIR [--step N] --format npz|safetensors --output FILE

The model config is the run's DIR/config.json; the parameters are those of the newest (or
`--step`) checkpoint under DIR/checkpoints. 'npz' writes big_vision's layout (flat '/'-joined
names, as `big_vision.utils.load_params` reads); 'safetensors' writes open_clip's CLIP state dict
(float32), for models whose architecture open_clip has (class-token ViT with ln_pre and
bias-free projections, or the ResNet tower). Either loads back with
`big_vision_lite.weights.load_params`.
"""

import argparse
import os
import sys

import jax
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import errors, weights


def main(argv: list[str] | None = None) -> str:
  """Writes the file; returns its path."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True, help="the training run's workdir")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--format", required=True, choices=weights.FORMATS)
  p.add_argument("--output", required=True, help="the file to write")
  args = p.parse_args(argv)
  config_path = os.path.join(args.workdir, "config.json")
  if not os.path.exists(config_path):
    raise config_lib.ConfigError(f"{config_path} not found: --workdir must be a training run's "
                                 "workdir")
  model_config = config_lib.from_json(config_path).model.to_dict()
  params = ckpt_lib.restore_params(os.path.join(args.workdir, "checkpoints"), args.step)
  weights.export(params, model_config, args.output, args.format)
  count = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
  print(f"wrote {args.output} ({args.format}, {count / 1e6:.2f}M parameters)")
  return args.output


if __name__ == "__main__":
  try:
    main()
  except (errors.Error, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(getattr(e, "exit_code", 2))
