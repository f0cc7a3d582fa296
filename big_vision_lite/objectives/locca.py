"""LocCa (arXiv 2403.19596), as SigLIP 2 trains it: a decoder (models/decoder.py, parameters
`dec/...`) reads the image tower's un-pooled tokens and learns three tasks per example, each its
own decoder pass with a task prefix:

- captioning: [CAP] -> the caption (`labels`); half of the time (`parallel`) in parallel: every
  input after the prefix is the mask token and nothing is causal (CapPa's parallel prediction);
- referring expression: [REF] + region caption -> the region's box;
- grounded captioning: [GROUND] + box -> the region caption.

Examples whose `region_valid` is 0 (no region) train captioning only; `regions=False` trains
captioning only and reads no region keys.

Box encoding: location tokens appended to the vocabulary (as PaliGemma does): a coordinate c in
[0, 1] is bin min(floor(c * loc_bins), loc_bins - 1), written as token `loc0 + bin`; a box is
four tokens y0, x0, y1, x1, decoded at the bins' centres. The decoder's vocabulary is
`vocab_size` text ids (at least the tokenizer's), then the three task tokens, then the
`loc_bins` location tokens; id `size` (one past the last) is the mask token.

Loss: each task's mean token cross-entropy over its target tokens (text targets up to and with
EOS; the four box tokens), averaged over the example's tasks, then over examples (so gradient
accumulation averages it exactly). The cross-entropy is taken `loss_chunk` tokens at a time when
set (memory without [B, L, V] logits).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite import schema
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.models import decoder as decoder_lib
from big_vision_lite.models import generate
from big_vision_lite.models.text import TextTransformer
from big_vision_lite.objectives import BatchKey, Term, image_tokens
from big_vision_lite.schema import ConfigError

TASKS = ("caption", "referring", "grounded")


@dataclasses.dataclass(frozen=True)
class Vocab:
  """The decoder's token layout: text ids [0, text), task tokens, location tokens, mask."""

  text: int
  loc_bins: int

  @property
  def task(self) -> dict[str, int]:
    return {name: self.text + i for i, name in enumerate(TASKS)}

  @property
  def loc0(self) -> int:
    return self.text + len(TASKS)

  @property
  def size(self) -> int:
    """Output classes; also the mask token's id (input only)."""
    return self.loc0 + self.loc_bins

  def box_tokens(self, box: jax.Array) -> jax.Array:
    """Boxes float [..., 4] (y0, x0, y1, x1 in [0, 1]) -> location tokens int32 [..., 4]."""
    bins = jnp.clip(jnp.floor(box * self.loc_bins), 0, self.loc_bins - 1).astype(jnp.int32)
    return self.loc0 + bins

  def boxes(self, tokens) -> np.ndarray:
    """Location tokens [..., 4] -> boxes float32 [..., 4] at the bins' centres."""
    return ((np.asarray(tokens) - self.loc0 + 0.5) / self.loc_bins).astype(np.float32)


# The positions [start, stop) of each task's sequence that predict its targets (text length L):
# only there are logits computed.
TARGETS = {"caption": lambda length: (0, length), "referring": lambda length: (length, length + 4),
           "grounded": lambda length: (4, length + 4)}


def sequences(vocab: Vocab, batch: dict, regions: bool) -> dict[str, tuple]:
  """{task: (decoder input [B, T], targets [B, T], target weights [B, T], causal)} for the
  batch's captions (`labels`) and, with `regions`, its region captions and boxes. Position j
  of an input predicts target j; weights are 0 outside TARGETS."""
  labels = batch["labels"]
  b, length = labels.shape
  col = lambda v: jnp.full((b, 1), v, jnp.int32)
  parallel = batch["locca_parallel"][:, None]
  shifted = jnp.where(parallel, vocab.size, labels[:, :-1])  # The mask token, or the previous.
  out = {"caption": (jnp.concatenate([col(vocab.task["caption"]), shifted], 1), labels,
                     (labels != 0).astype(jnp.float32), ~batch["locca_parallel"])}
  if regions:
    text, box = batch["region_labels"], vocab.box_tokens(batch["region_box"])
    seq = jnp.concatenate([col(vocab.task["referring"]), text, box], 1)  # [B, L + 5]
    weights = jnp.concatenate([jnp.zeros((b, length)), jnp.ones((b, 4))], 1)
    out["referring"] = (seq[:, :-1], seq[:, 1:], weights, jnp.ones((b,), bool))
    seq = jnp.concatenate([col(vocab.task["grounded"]), box, text], 1)
    weights = jnp.concatenate([jnp.zeros((b, 4)), (text != 0).astype(jnp.float32)], 1)
    out["grounded"] = (seq[:, :-1], seq[:, 1:], weights, jnp.ones((b,), bool))
  return out


def attention_mask(tokens: jax.Array, causal: jax.Array) -> jax.Array:
  """bool [B, 1, T, T]: query i sees key j when j is no padding (or is i) and, where `causal`
  [B], j <= i."""
  t = tokens.shape[1]
  keys = (tokens != 0)[:, None, None, :] | jnp.eye(t, dtype=bool)[None, None]
  order = jnp.tril(jnp.ones((t, t), bool))[None, None]
  return keys & (order | ~causal[:, None, None, None])


class LocCa(Term):
  """The LocCa decoder's captioning, referring and grounded captioning losses (see module)."""

  name = "locca"
  params = ("dec",)
  OPTIONS = dict(
      depth=schema.Int(None, "decoder blocks; None: half the text tower's depth (at least 1)",
                       nullable=True, positive=True),
      width=schema.Int(None, "decoder width; None: the text tower's", nullable=True,
                       positive=True),
      mlp_dim=schema.Int(None, "decoder MLP size; None: the text tower's", nullable=True,
                         positive=True),
      num_heads=schema.Int(None, "decoder heads; None: the text tower's", nullable=True,
                           positive=True),
      vocab_size=schema.Int(None, "text ids the decoder reads and predicts (at least the "
                            "tokenizer's); None: model.text.vocab_size", nullable=True,
                            positive=True),
      loc_bins=schema.Int(100, "location tokens per coordinate (box quantisation)",
                          positive=True),
      parallel=schema.Float(0.5, "probability that an example's caption is predicted in "
                            "parallel (mask tokens, no causal mask)", min=0),
      regions=schema.Bool(True, "train referring expressions and grounded captioning from "
                          "the input's region_labels / region_box / region_valid; False: "
                          "captioning only"),
      loss_chunk=schema.Int(None, "tokens per chunk of the decoder's cross-entropy (memory "
                            "without [B, L, V] logits); None: one chunk", nullable=True,
                            positive=True),
  )

  def __init__(self, config, settings, mesh=None):
    super().__init__(config, settings, mesh)
    s = settings
    if not 0 <= s["parallel"] <= 1:
      raise ConfigError(f"objectives.locca.parallel={s['parallel']} must be in [0, 1]")
    text = TextTransformer(**{k: v for k, v in config.model.text.items()}).hparams()
    self.vocab = Vocab(s["vocab_size"] or config.model.text.vocab_size, s["loc_bins"])
    self.max_len = config.model.text.max_len
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
             "float16": jnp.float16}[config.model.dtype_mm]
    self.decoder = decoder_lib.Decoder(
        vocab_size=self.vocab.size, width=s["width"] or text["width"],
        depth=s["depth"] or max(1, text["depth"] // 2), mlp_dim=s["mlp_dim"] or text["mlp_dim"],
        num_heads=s["num_heads"] or text["num_heads"], max_len=self.max_len + 5,
        dtype_mm=dtype, act=config.model.text.act, ln_eps=config.model.text.ln_eps)
    self.regions, self.chunk = s["regions"], s["loss_chunk"]
    self.plain = self.chunk is None
    fix = ("shapes gives them; tar shards need `regions` and the op `region` then "
           "tokenize(inkey='region_text', outkey='region_labels') in config.input.pp; or set "
           "objectives.locca.regions=False to train captioning only")
    self.batch_keys = {"labels": BatchKey(
        (self.max_len,), jnp.int32, "caption token ids",
        "tokenize(max_len=...) in config.input.pp or model.text.max_len")}
    if self.regions:
      self.batch_keys.update(
          region_labels=BatchKey((self.max_len,), jnp.int32, "region caption token ids", fix),
          region_box=BatchKey((4,), jnp.float32, "region boxes", fix),
          region_valid=BatchKey((), jnp.float32, "region flags", fix))

  def check_tokenizer(self, vocab: int, spec: str) -> None:
    if self.vocab.text < vocab:
      raise ConfigError(f"objectives.locca.vocab_size={self.vocab.text} is smaller than the "
                        f"tokenizer's {vocab} pieces ({spec}); set it to at least {vocab} (or "
                        "None: model.text.vocab_size)")

  def evaluator_defaults(self):
    return {"decoder": self}

  def plain_settings(self):
    return {"loss_chunk": None}

  def init(self, rng, outputs):
    img = image_tokens(outputs, self.name)
    tokens = jnp.zeros((1, self.max_len + 4), jnp.int32)
    mask = attention_mask(tokens, jnp.ones((1,), bool))
    return {"dec": self.decoder.init(rng, tokens, jnp.zeros((1, *img.shape[1:]), img.dtype),
                                     mask)["params"]}

  def prepare(self, batch, rng):
    b = batch["labels"].shape[0]
    return {"locca_parallel": jax.random.bernoulli(rng, self.settings["parallel"], (b,))}

  def loss(self, params, batch, outputs):
    img = image_tokens(outputs, self.name)
    seqs = sequences(self.vocab, batch, self.regions)
    # The tasks' passes as one decoder call over [tasks x B] sequences padded to one length.
    t = max(tokens.shape[1] for tokens, *_ in seqs.values())
    pad = lambda x: jnp.pad(x, ((0, 0), (0, t - x.shape[1])))
    tokens, targets, weights = (jnp.concatenate([pad(s[i]) for s in seqs.values()])
                                for i in range(3))
    causal = jnp.concatenate([s[3] for s in seqs.values()])
    h = self.decoder.apply({"params": params["dec"]}, tokens, jnp.tile(img, (len(seqs), 1, 1)),
                           attention_mask(tokens, causal))
    # Logits only where a task has targets: [B, stop - start] positions of each task's rows.
    b, length = batch["labels"].shape
    spans = [(i * b, (i + 1) * b, *TARGETS[task](length)) for i, task in enumerate(seqs)]
    pick = lambda x: jnp.concatenate([x[r0:r1, s0:s1].reshape(-1, *x.shape[2:])
                                      for r0, r1, s0, s1 in spans])
    nll = decoder_lib.cross_entropy(params["dec"]["head"], pick(h), pick(targets), self.chunk)
    per_task = {}  # {task: [B]}
    offset = 0
    for task, (r0, r1, s0, s1) in zip(seqs, spans):
      n = (r1 - r0) * (s1 - s0)
      w = weights[r0:r1, s0:s1]
      per_task[task] = (jnp.sum(nll[offset:offset + n].reshape(w.shape) * w, 1)
                        / jnp.maximum(jnp.sum(w, 1), 1))
      offset += n
    per_example = per_task["caption"]
    metrics: dict[str, Any] = {"locca_caption": jnp.mean(per_task["caption"])}
    if self.regions:
      valid = batch["region_valid"]
      per_example = (per_example + valid * (per_task["referring"] + per_task["grounded"])) / (
          1 + 2 * valid)
      for task in TASKS[1:]:  # Over the examples that have a region (0 when none has).
        metrics[f"locca_{task}"] = (jnp.sum(per_task[task] * valid)
                                    / jnp.maximum(jnp.sum(valid), 1))
    return jnp.mean(per_example), metrics

  def greedy(self, params, img: jax.Array, prefix: jax.Array, steps: int, lo: int,
             hi: int) -> jax.Array:
    """Greedy decoding (models/generate.py): the `steps` tokens int32 [b, steps] that follow
    `prefix` [b, P], each the most likely id in [lo, hi) given the image tokens `img` [b, N, D]
    and the tokens before it (causal attention, as the tasks were trained); 0 after an EOS."""
    b, p = prefix.shape
    tokens = jnp.concatenate([prefix.astype(jnp.int32), jnp.zeros((b, steps), jnp.int32)], 1)
    causal = jnp.ones((b,), bool)
    ids = jnp.arange(self.vocab.size)
    allowed = (ids >= lo) & (ids < hi)

    def next_logits(tokens, at):
      h = self.decoder.apply({"params": params["dec"]}, tokens, img,
                             attention_mask(tokens, causal))
      z = decoder_lib.logits(params["dec"]["head"], generate.at(h, at))
      return jnp.where(allowed, z, -jnp.inf)

    return generate.greedy(next_logits, tokens, jnp.full((b,), p, jnp.int32), steps,
                           tok_lib.EOS_ID)

  def caption(self, params, outputs: dict) -> jax.Array:
    """Greedy captions: token ids int32 [b, max_len] (text ids only; cut at EOS to read)."""
    img = image_tokens(outputs, self.name)
    prefix = jnp.full((img.shape[0], 1), self.vocab.task["caption"], jnp.int32)
    return self.greedy(params, img, prefix, self.max_len, 1, self.vocab.text)

  def refer(self, params, outputs: dict, region_labels: jax.Array) -> jax.Array:
    """Boxes' location tokens int32 [b, 4] for region captions' tokens [b, max_len]."""
    img = image_tokens(outputs, self.name)
    prefix = jnp.concatenate([jnp.full((img.shape[0], 1), self.vocab.task["referring"],
                                       jnp.int32), region_labels], 1)
    return self.greedy(params, img, prefix, 4, self.vocab.loc0, self.vocab.size)
