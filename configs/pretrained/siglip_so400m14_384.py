"""SigLIP So400m/14, 384 px: the released model's towers, resolution, preprocessing and tokenizer.

  python -m big_vision_lite.evaluate --config 'configs/pretrained/siglip_so400m14_384.py:init=/path/to/webli_en_so400m_384_58765454.npz,tokenizer=/path/to/c4_en.model' --evals imagenet

Weights and tokenizer: see big_vision_lite/pretrained.py (RELEASED['siglip_so400m14_384']) and docs/weights.md.
Without an argument the config still loads; pass --config.model_init=PATH
(and --config.input.tokenizer=PATH for SigLIP) instead.
"""

from big_vision_lite import pretrained


def get_config(arg: str | None = None):
  return pretrained.config("siglip_so400m14_384", arg)
