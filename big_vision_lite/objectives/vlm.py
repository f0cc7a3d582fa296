"""`vlm`: the image tower as the eye of a small language model, LLaVA's recipe.

The image tower's un-pooled tokens [B, N, Di] pass through a projection (`proj/...`, linear or
LLaVA-1.5's MLP) into the width of a decoder-only language model (`lm/...`,
models/lm.py), where they come before the text: [N image tokens, BOS, conversation]. The loss
is the next-token cross-entropy on the tokens `vlm_mask` marks (the answers), a mean over each
example's marked tokens, then over examples. The conversation (`vlm_text`, `vlm_mask`) is made
by data/instruct.py.

Which parameters train is the config's business (`config.frozen`), not this term's: LLaVA's
stages are
- stage 0 (`image=False`: the LM reads text alone; every token is a target): frozen
  `img/.*`, `txt/.*`, `t`, `b`, `proj/.*`;
- stage 1 (captions): frozen `img/.*`, `txt/.*`, `t`, `b`, `lm/.*`: the projection alone;
- stage 2 (instructions): frozen `img/.*`, `txt/.*`, `t`, `b`: projection and LM.
See configs/vlm_shapes.py and docs/vlm.md.

The LM's context is `context` positions (None: image tokens + 1 + `text_len`); an image tower
whose token count does not fit, or a checkpoint whose projection or LM was built for another
token width or context, is a ConfigError.
"""

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite import pytree, schema, weights
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.models import decoder as decoder_lib
from big_vision_lite.models import generate
from big_vision_lite.models import lm as lm_lib
from big_vision_lite.models.text import TextTransformer
from big_vision_lite.objectives import BatchKey, Term, image_tokens
from big_vision_lite.schema import ConfigError

class VLM(Term):
  """Next-token cross-entropy of a language model reading projected image tokens (see module)."""

  name = "vlm"
  params = ("proj", "lm")
  OPTIONS = dict(
      width=schema.Int(None, "LM width; None: the text tower's", nullable=True, positive=True),
      depth=schema.Int(2, "LM blocks", positive=True),
      mlp_dim=schema.Int(None, "LM MLP size; None: the text tower's", nullable=True,
                         positive=True),
      num_heads=schema.Int(None, "LM heads; None: the text tower's", nullable=True,
                           positive=True),
      vocab_size=schema.Int(None, "text ids the LM reads and predicts (at least the "
                            "tokenizer's); None: model.text.vocab_size", nullable=True,
                            positive=True),
      projection=schema.Str("mlp", "image tokens -> LM width: `linear` or `mlp` (LLaVA-1.5's "
                            "Dense-GELU-Dense)", choices=lm_lib.PROJECTIONS),
      text_len=schema.Int(32, "conversation tokens per example (the input's vlm_len)",
                          positive=True),
      context=schema.Int(None, "LM positions; None: image tokens + 1 + text_len", nullable=True,
                         positive=True),
      image=schema.Bool(True, "image tokens before the text; False: the LM reads text alone "
                        "(stage 0)"),
      loss_chunk=schema.Int(None, "tokens per chunk of the cross-entropy (memory without "
                            "[B, L, V] logits); None: one chunk", nullable=True, positive=True),
  )

  def __init__(self, config, settings, mesh=None):
    super().__init__(config, settings, mesh)
    s = settings
    text = TextTransformer(**{k: v for k, v in config.model.text.items()}).hparams()
    self.vocab = s["vocab_size"] or config.model.text.vocab_size
    self.width = s["width"] or text["width"]
    self.text_len, self.use_image, self.chunk = s["text_len"], s["image"], s["loss_chunk"]
    self.plain = self.chunk is None
    self.dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
                  "float16": jnp.float16}[config.model.dtype_mm]
    self.projection = lm_lib.Projection(self.width, s["projection"], self.dtype)
    self._lm_args = dict(
        vocab_size=self.vocab, width=self.width, depth=s["depth"],
        mlp_dim=s["mlp_dim"] or text["mlp_dim"], num_heads=s["num_heads"] or text["num_heads"],
        dtype_mm=self.dtype, act=config.model.text.act, ln_eps=config.model.text.ln_eps)
    self.context = s["context"]
    fix = ("data=dict(name='shapes', conversation=..., vlm_len=objectives.vlm.text_len), or for "
           "tar shards the op `conversation` in config.input.pp (docs/vlm.md)")
    self.batch_keys = {
        "vlm_text": BatchKey((self.text_len,), jnp.int32, "conversation token ids", fix),
        "vlm_mask": BatchKey((self.text_len,), jnp.float32, "conversation target flags", fix)}

  def lm(self, num_image_tokens: int) -> lm_lib.LanguageModel:
    """The language model for an image tower of `num_image_tokens` tokens (its context must hold
    them, BOS and the text)."""
    need = num_image_tokens + 1 + self.text_len
    context = self.context or need
    if need > context:
      raise ConfigError(
          f"objectives.vlm: the image tower gives {num_image_tokens} tokens; with BOS and "
          f"text_len={self.text_len} the language model needs {need} positions, but its context "
          f"is {context} (objectives.vlm.context): raise the context (a new LM), shorten "
          "text_len, or use an image tower with fewer tokens (image_size / patch size)")
    return lm_lib.LanguageModel(max_len=context, **self._lm_args)

  def check_tokenizer(self, vocab: int, spec: str) -> None:
    if self.vocab < vocab:
      raise ConfigError(f"objectives.vlm.vocab_size={self.vocab} is smaller than the "
                        f"tokenizer's {vocab} pieces ({spec}); set it to at least {vocab} (or "
                        "None: model.text.vocab_size)")

  def evaluator_defaults(self):
    return {"vlm": self}  # The vqa evaluator's language model.

  def plain_settings(self):
    return {"loss_chunk": None}

  def init(self, rng, outputs):
    img = image_tokens(outputs, self.name)
    lm = self.lm(img.shape[1])
    proj = self.projection.init(jax.random.fold_in(rng, 0),
                                jnp.zeros((1, *img.shape[1:]), img.dtype))["params"]
    prefix = jnp.zeros((1, img.shape[1], self.width), jnp.float32)
    tokens = jnp.zeros((1, 1 + self.text_len), jnp.int32)
    return {"proj": proj, "lm": lm.init(jax.random.fold_in(rng, 1), tokens, prefix)["params"]}

  def hidden(self, params, img: jax.Array, tokens: jax.Array) -> jax.Array:
    """The LM's hidden states [B, T, D] at the text positions `tokens` [B, T] (BOS first), with
    the projected image tokens `img` [B, N, Di] before them (none when `image` is False)."""
    lm = self.lm(img.shape[1])
    if not self.use_image:
      return lm.apply({"params": params["lm"]}, tokens)
    prefix = self.projection.apply({"params": params["proj"]}, img)
    return lm.apply({"params": params["lm"]}, tokens, prefix)[:, img.shape[1]:]

  def loss(self, params, batch, outputs):
    img = image_tokens(outputs, self.name)
    text, mask = batch["vlm_text"], batch["vlm_mask"]
    bos = jnp.full((text.shape[0], 1), self.vocab, jnp.int32)
    h = self.hidden(params, img, jnp.concatenate([bos, text[:, :-1]], 1))  # j predicts text[j]
    nll = decoder_lib.cross_entropy(params["lm"]["head"], h, text, self.chunk)
    per_example = jnp.sum(nll * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1)
    return jnp.mean(per_example), {}

  def generate(self, params, img: jax.Array, prompts: jax.Array, lengths: jax.Array,
               steps: int) -> jax.Array:
    """Greedy answers int32 [B, steps] (0 after EOS) to `prompts` int32 [B, text_len] (each a
    question's ids and EOS in its first `lengths[b]` positions, models.generate's layout) about
    the images of `img` [B, N, Di]."""
    bos = jnp.full((prompts.shape[0], 1), self.vocab, jnp.int32)
    tokens = jnp.concatenate([bos, prompts[:, :-1]], 1)
    next_logits = lambda t, at: decoder_lib.logits(
        params["lm"]["head"], generate.at(self.hidden(params, img, t), at))
    return generate.greedy(next_logits, tokens, lengths + 1, steps, tok_lib.EOS_ID)

  def init_from(self, config, loaded: dict, fresh: dict, mesh=None) -> dict:
    """Fails (ConfigError) when `config.model_init` holds this term's parameters at other
    shapes: a projection built for another image-token width, an LM of another context or
    size (job.load_model_init would otherwise start them afresh without a word)."""
    flat, _ = weights.read(config.model_init)
    fresh_only = [(r, True) for r in config.model_load.dont_load]
    names = {f"{key}/{n}": x for key in self.params if key in fresh
             for n, x in pytree.named_leaves(fresh[key])
             if not pytree.match_rules(fresh_only, f"{key}/{n}", False)}
    wrong = [f"  {n}: checkpoint {np.shape(flat[n])} vs model {np.shape(x)}"
             for n, x in names.items() if n in flat and np.shape(flat[n]) != np.shape(x)]
    if wrong:
      raise ConfigError(
          f"objectives.vlm: checkpoint {config.model_init} holds the projection / LM at other "
          "shapes than this config builds:\n" + "\n".join(wrong[:10]) + "\nThe image tower's "
          "token width (proj/Dense_0/kernel's first axis) or token count (lm/pos_embedding's "
          "context) differs from the encoder the checkpoint was trained with: use that encoder "
          "and objectives.vlm settings, or start the projection afresh (model_load.dont_load="
          "('proj/.*',))")
    return loaded

