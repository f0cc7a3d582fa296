"""SigLIP 2 g-opt/16, 384 px: the released model's towers,
resolution, preprocessing and Gemma tokenizer.

  python -m big_vision_lite.evaluate --config 'configs/pretrained/siglip2_gopt16_384.py:init=/path/to/siglip2_g-opt16_384.npz,tokenizer=/path/to/gemma_tokenizer.model' --evals imagenet

Weights and tokenizer: see big_vision_lite/pretrained.py (RELEASED['siglip2_gopt16_384']) and
docs/huggingface.md. init= may also be the Hugging Face directory or `hf:google/...` id of the
same model, whose own tokenizer is then used.
"""

from big_vision_lite import pretrained


def get_config(arg: str | None = None):
  return pretrained.config("siglip2_gopt16_384", arg)
