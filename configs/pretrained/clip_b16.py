"""OpenAI CLIP ViT-B/16: the released model's towers, resolution, preprocessing and tokenizer.

  python -m big_vision_lite.evaluate --config 'configs/pretrained/clip_b16.py:init=/path/to/open_clip_model.safetensors' --evals imagenet

Weights and tokenizer: see big_vision_lite/pretrained.py (RELEASED['clip_b16']) and docs/weights.md.
Without an argument the config still loads; pass --config.model_init=PATH
(and --config.input.tokenizer=PATH for SigLIP) instead.
"""

from big_vision_lite import pretrained


def get_config(arg: str | None = None):
  return pretrained.config("clip_b16", arg)
