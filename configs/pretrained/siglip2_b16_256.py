"""SigLIP 2 B/16, 256 px: the released model's towers,
resolution, preprocessing and Gemma tokenizer.

  python -m big_vision_lite.evaluate --config 'configs/pretrained/siglip2_b16_256.py:init=/path/to/siglip2_b16_256.npz,tokenizer=/path/to/gemma_tokenizer.model' --evals imagenet

Weights and tokenizer: see big_vision_lite/pretrained.py (RELEASED['siglip2_b16_256']) and
docs/huggingface.md. init= may also be the Hugging Face directory or `hf:google/...` id of the
same model, whose own tokenizer is then used.
"""

from big_vision_lite import pretrained


def get_config(arg: str | None = None):
  return pretrained.config("siglip2_b16_256", arg)
