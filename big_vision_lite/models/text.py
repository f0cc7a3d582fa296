"""Text Transformer tower: token ids [B, L] -> embedding.

The defaults are big_vision's text tower (bidirectional, pooled at the last token). OpenAI/
open_clip CLIP text towers are the options `causal=True, pool_type='argmax', head_bias=False,
act='quick_gelu' (OpenAI) or 'gelu', ln_eps=1e-5`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite.models import layers
from big_vision_lite.models.vit import resolve_hparams

POOL_TYPES = ("last", "first", "gap", "map", "argmax")  # TextTransformer.pool_type


class TextTransformer(nn.Module):
  """Transformer over token ids [B, L] -> (embedding [B, num_classes or D], aux).

  `causal=True` masks attention to earlier tokens; `pool_type='argmax'` pools at the largest
  token id (CLIP's end-of-text); `head_bias`, `act` (see layers.ACTIVATIONS) and `ln_eps` as in
  the ViT.
  """

  vocab_size: int
  variant: str | None = None
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  max_len: int | None = None  # tokens per text; None: whatever the input has
  num_classes: int | None = None
  pool_type: str = "last"
  head_zeroinit: bool = False
  dtype_mm: Any = jnp.float32
  scan: bool = False
  remat_policy: str = "none"
  act: str = "gelu_tanh"
  ln_eps: float = 1e-6
  causal: bool = False
  head_bias: bool = True

  def hparams(self) -> dict[str, Any]:
    """The variant's hyper-parameters, with any explicitly given field taking precedence."""
    return resolve_hparams(self, ("width", "depth", "mlp_dim", "num_heads"), "'B'")

  @nn.compact
  def __call__(self, text: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    hp = self.hparams()
    if self.max_len is not None and text.shape[1] != self.max_len:
      raise ValueError(f"text tower built for {self.max_len} tokens got {text.shape[1]}; "
                       "tokenize to max_len or set max_len")
    out = {}
    x = nn.Embed(self.vocab_size, hp["width"], name="Embed_0")(text)  # [B, L, D]
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(hp["width"])),
                     (1, text.shape[1], hp["width"]), jnp.float32)
    x = x + pos
    x = layers.Encoder(hp["depth"], hp["mlp_dim"], hp["num_heads"], self.dtype_mm,
                       scan=self.scan, remat_policy=self.remat_policy, act=self.act,
                       ln_eps=self.ln_eps, causal=self.causal, name="Encoder_0")(x)
    out["encoded"] = x
    x = layers.pool(x, self.pool_type, hp["mlp_dim"], hp["num_heads"], self.dtype_mm, self.act,
                    self.ln_eps, tokens=text)
    out["pre_logits"] = x  # [B, D]
    return layers.head(x, self.num_classes, self.head_zeroinit, self.dtype_mm,
                       self.head_bias), out
