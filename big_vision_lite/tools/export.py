"""Exports a run's parameters as a big_vision .npz, an open_clip .safetensors state dict or a
Hugging Face transformers directory.

  python -m big_vision_lite.tools.export --workdir DIR [--step N] --format npz|safetensors|hf --output OUT

The model config is the run's DIR/config.json; the parameters are those of the newest (or
`--step`) checkpoint under DIR/checkpoints. 'npz' writes big_vision's layout (flat '/'-joined
names, as `big_vision.utils.load_params` reads); 'safetensors' writes open_clip's CLIP state dict
(float32), for models whose architecture open_clip has (class-token ViT with ln_pre and
bias-free projections, or the ResNet tower). 'hf' writes a directory (config.json,
model.safetensors and the run's tokenizer file) that `transformers.AutoModel.from_pretrained`
loads as SiglipModel (MAP head, no image projection) or CLIPModel (class-token ViT); a model
the class cannot hold is refused with the reason. Each loads back with
`big_vision_lite.weights.load_params`. LoRA adapters of the run are merged into their kernels
first, so the exported model is a plain one.
"""

import argparse
import os

import jax
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import errors, job, weights
from big_vision_lite.models import lora


def main(argv: list[str] | None = None) -> str:
  """Writes the file; returns its path."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True, help="the training run's workdir")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--format", required=True, choices=weights.FORMATS)
  p.add_argument("--output", required=True, help="the file (npz, safetensors) or directory (hf) "
                 "to write")
  args = p.parse_args(argv)
  config_path = os.path.join(args.workdir, "config.json")
  if not os.path.exists(config_path):
    raise errors.ConfigError(f"{config_path} not found: --workdir must be a training run's "
                                 "workdir")
  config = config_lib.from_json(config_path)
  params = ckpt_lib.restore_params(os.path.join(args.workdir, "checkpoints"), args.step)
  merged = ""
  if lora.KEY in params:  # Adapters folded into their kernels: the export is a plain model.
    merged = f", {lora.count(params) / 1e6:.3f}M LoRA parameters merged"
    params = lora.merge(params, config.lora.alpha)
  weights.export(params, config.model.to_dict(), args.output, args.format,
                 tokenizer=config.input.tokenizer)
  count = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
  print(f"wrote {args.output} ({args.format}, {count / 1e6:.2f}M parameters{merged})")
  return args.output


if __name__ == "__main__":
  errors.run(main)
