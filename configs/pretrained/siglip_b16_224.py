"""SigLIP B/16, 224 px: the released model's towers, resolution, preprocessing and tokenizer.

  python -m big_vision_lite.evaluate --config 'configs/pretrained/siglip_b16_224.py:init=/path/to/webli_en_b16_224_63724782.npz,tokenizer=/path/to/c4_en.model' --evals imagenet

Weights and tokenizer: see big_vision_lite/pretrained.py (RELEASED['siglip_b16_224']) and docs/weights.md.
Without an argument the config still loads; pass --config.model_init=PATH
(and --config.input.tokenizer=PATH for SigLIP) instead.
"""

from big_vision_lite import pretrained


def get_config(arg: str | None = None):
  return pretrained.config("siglip_b16_224", arg)
