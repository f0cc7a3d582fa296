"""SigLIP 2 B/16 NaFlex: the released model's towers, NaFlex preprocessing at a sequence length
of seq_len patches (default 256, as the published figures), and Gemma tokenizer.

  python -m big_vision_lite.evaluate --config 'configs/pretrained/siglip2_b16_naflex.py:seq_len=256,init=/path/to/siglip2_b16_naflex.npz,tokenizer=/path/to/gemma_tokenizer.model' --evals imagenet

Weights and tokenizer: see big_vision_lite/pretrained.py (RELEASED['siglip2_b16_naflex']) and
docs/huggingface.md. init= may also be the Hugging Face Siglip2Model directory or
`hf:google/...` id of the same model, whose own tokenizer is then used.
"""

from big_vision_lite import pretrained


def get_config(arg: str | None = None):
  return pretrained.config("siglip2_b16_naflex", arg)
