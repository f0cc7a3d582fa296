"""Released image-text models this project loads: each one's exact towers, resolution,
preprocessing and tokenizer, where its weights come from, and its published zero-shot figure.

`configs/pretrained/NAME.py` are one-line configs over this table (`config(NAME, arg)`); the
table of released models in docs/weights.md is generated from it too.
"""

import dataclasses
import os
from typing import Any

import ml_collections

from big_vision_lite import config as config_lib


@dataclasses.dataclass(frozen=True)
class Released:
  title: str
  weights: str          # The file the user downloads, and from where.
  model: dict[str, Any]  # config.model
  pp: str               # Image preprocessing after `decode` (evaluation and training).
  tokenizer: str        # input.tokenizer default ('clip', or c4_en's path to be given).
  imagenet: float       # Zero-shot ImageNet-1k top-1: open_clip's results table (SigLIP,
                        # CLIP), big_vision's SigLIP 2 README (SigLIP 2).


_SIGLIP_TOK = "c4_en.model:pad=1"  # Replaced by the path given as tokenizer=PATH.
_SIGLIP_TEXT = dict(vocab_size=32_000, max_len=64, pool_type="last")
_SIGLIP_FILES = "https://storage.googleapis.com/big_vision/siglip/"
_CLIP_TOWER = dict(act="quick_gelu", ln_eps=1e-5, head_bias=False)
_CLIP_TEXT = dict(variant=None, vocab_size=49_408, max_len=77, depth=12, pool_type="argmax",
                  causal=True, **_CLIP_TOWER)
_CLIP_VIT = dict(pool_type="tok", posemb_cls=True, ln_pre=True, patch_bias=False, **_CLIP_TOWER)
_CLIP_PP = "resize_small({0}, method='bicubic')|central_crop({0})|normalize"
_HUB = "open_clip_model.safetensors from the Hugging Face hub repository "


def _siglip(variant: str, size: int, text: str, dim: int) -> dict[str, Any]:
  return dict(image=dict(variant=variant, image_size=size, pool_type="map"),
              text=dict(variant=text, **_SIGLIP_TEXT), out_dim=(None, dim),
              temperature_init=10.0, bias_init=-10.0)


# SigLIP 2 (big_vision's README_siglip2.md): SigLIP's towers with Gemma's 256k vocabulary, no
# image projection (the MAP head's output is the embedding), a text head to the image width.
_SIGLIP2_TOK = "gemma_tokenizer.model"  # Replaced by the path given as tokenizer=PATH.
_SIGLIP2_FILES = "https://storage.googleapis.com/big_vision/siglip2/"
SIGLIP2_TOKENIZER = "https://storage.googleapis.com/big_vision/gemma_tokenizer.model"
_G_OPT = dict(width=1536, depth=40, mlp_dim=6144, num_heads=16)  # g-opt/16's image tower
NAFLEX_SEQ_LEN = 256  # The sequence length of the published NaFlex figures.


def _siglip2(name: str, title: str, image: str | dict, size: int, text: str, dim: int,
             imagenet: float) -> Released:
  image = dict(variant=image) if isinstance(image, str) else dict(image, patch_size=(16, 16))
  model = dict(image=dict(image, image_size=size, pool_type="map"),
               text=dict(variant=text, vocab_size=256_000, max_len=64, pool_type="last"),
               out_dim=(None, dim), temperature_init=10.0, bias_init=-10.0)
  file = name.replace("gopt", "g-opt")  # big_vision's file names spell it g-opt
  return Released(f"SigLIP 2 {title}, {size} px", f"{_SIGLIP2_FILES}siglip2_{file}.npz", model,
                  f"resize({size})|value_range(-1, 1)", _SIGLIP2_TOK, imagenet)


def _clip_vit(variant: str, text_width: int, text_heads: int, dim: int) -> dict[str, Any]:
  return dict(image=dict(variant=variant, image_size=224, **_CLIP_VIT),
              text=dict(width=text_width, mlp_dim=4 * text_width, num_heads=text_heads,
                        **_CLIP_TEXT),
              out_dim=dim, temperature_init=1 / 0.07, bias_init=None)


RELEASED = {
    "siglip_b16_224": Released(
        "SigLIP B/16, 224 px", _SIGLIP_FILES + "webli_en_b16_224_63724782.npz",
        _siglip("B/16", 224, "B", 768), "resize(224)|value_range(-1, 1)", _SIGLIP_TOK,
        76.04),
    "siglip_b16_256": Released(
        "SigLIP B/16, 256 px", _SIGLIP_FILES + "webli_en_b16_256_60500360.npz",
        _siglip("B/16", 256, "B", 768), "resize(256)|value_range(-1, 1)", _SIGLIP_TOK,
        76.53),
    "siglip_so400m14_384": Released(
        "SigLIP So400m/14, 384 px", _SIGLIP_FILES + "webli_en_so400m_384_58765454.npz",
        _siglip("So400m/14", 384, "So400m", 1152), "resize(384)|value_range(-1, 1)",
        _SIGLIP_TOK, 83.08),
    **{f"siglip2_{name}": _siglip2(name, *args) for name, args in {
        "b16_224": ("B/16", "B/16", 224, "B", 768, 78.2),
        "b16_256": ("B/16", "B/16", 256, "B", 768, 79.1),
        "b16_384": ("B/16", "B/16", 384, "B", 768, 80.6),
        "b16_512": ("B/16", "B/16", 512, "B", 768, 81.2),
        "b32_256": ("B/32", "B/32", 256, "B", 768, 74.0),
        "l16_256": ("L/16", "L/16", 256, "L", 1024, 82.5),
        "l16_384": ("L/16", "L/16", 384, "L", 1024, 83.1),
        "l16_512": ("L/16", "L/16", 512, "L", 1024, 83.5),
        "so400m14_224": ("So400m/14", "So400m/14", 224, "So400m", 1152, 83.2),
        "so400m14_384": ("So400m/14", "So400m/14", 384, "So400m", 1152, 84.1),
        "so400m16_256": ("So400m/16", "So400m/16", 256, "So400m", 1152, 83.4),
        "so400m16_384": ("So400m/16", "So400m/16", 384, "So400m", 1152, 84.1),
        "so400m16_512": ("So400m/16", "So400m/16", 512, "So400m", 1152, 84.3),
        "gopt16_256": ("g-opt/16", _G_OPT, 256, "So400m", 1536, 84.5),
        "gopt16_384": ("g-opt/16", _G_OPT, 384, "So400m", 1536, 85.0),
    }.items()},
    # NaFlex: one model for every aspect ratio and sequence length (seq_len=N patches).
    **{f"siglip2_{name}_naflex": Released(
        f"SigLIP 2 {title} NaFlex, seq_len patches (default {NAFLEX_SEQ_LEN})",
        f"{_SIGLIP2_FILES}siglip2_{name}_naflex.npz",
        dict(image=dict(variant=title, naflex=True, posemb_grid=16, pool_type="map"),
             text=dict(variant=text, vocab_size=256_000, max_len=64, pool_type="last"),
             out_dim=(None, dim), temperature_init=10.0, bias_init=-10.0),
        "value_range(-1, 1)|naflex(16, {seq_len})", _SIGLIP2_TOK, imagenet)
       for name, (title, text, dim, imagenet) in {
           "b16": ("B/16", "B", 768, 78.5), "so400m16": ("So400m/16", "So400m", 1152, 83.5),
       }.items()},
    "clip_b32": Released(
        "OpenAI CLIP ViT-B/32", _HUB + "timm/vit_base_patch32_clip_224.openai",
        _clip_vit("B/32", 512, 8, 512), _CLIP_PP.format(224), "clip", 63.32),
    "clip_b16": Released(
        "OpenAI CLIP ViT-B/16", _HUB + "timm/vit_base_patch16_clip_224.openai",
        _clip_vit("B/16", 512, 8, 512), _CLIP_PP.format(224), "clip", 68.34),
    "clip_l14": Released(
        "OpenAI CLIP ViT-L/14", _HUB + "timm/vit_large_patch14_clip_224.openai",
        _clip_vit("L/14", 768, 12, 768), _CLIP_PP.format(224), "clip", 75.54),
    "clip_rn50": Released(
        "OpenAI CLIP RN50", _HUB + "timm/resnet50_clip.openai",
        dict(image=dict(type="resnet", variant="50", image_size=224),
             text=dict(width=512, mlp_dim=2048, num_heads=8, **_CLIP_TEXT), out_dim=1024,
             temperature_init=1 / 0.07, bias_init=None),
        _CLIP_PP.format(224), "clip", 59.82),
}


SIGLIP_TOKENIZER = "https://storage.googleapis.com/t5-data/vocabs/cc_en.32000/sentencepiece.model"


def config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of released model `name`, for evaluation or fine-tuning.

  `arg` is ','-joined `init=PATH` (the weights: a .npz, a Hugging Face directory or
  `hf:ORG/NAME`; sets model_init) and `tokenizer=PATH` (SigLIP: big_vision's c4_en
  sentencepiece model, SIGLIP_TOKENIZER, its padding with 1 added; SigLIP 2: Gemma's,
  SIGLIP2_TOKENIZER, padded with 0). Both may be given later instead: --config.model_init=PATH,
  --config.input.tokenizer=PATH (`:pad=1` for SigLIP). A Hugging Face directory that carries its
  tokenizer needs no tokenizer=.
  NaFlex models also take `seq_len=N`, the patches per image (default NAFLEX_SEQ_LEN).
  """
  release = RELEASED[name]
  naflex = bool(release.model["image"].get("naflex"))
  known = {"init", "tokenizer"} | ({"seq_len"} if naflex else set())
  args = config_lib.parse_arg(arg, known, f"configs/pretrained/{name}.py")
  seq_len = args.get("seq_len", str(NAFLEX_SEQ_LEN))
  if not seq_len.isdigit() or int(seq_len) < 1:
    raise config_lib.ConfigError(f"configs/pretrained/{name}.py: seq_len={seq_len!r} should be a "
                                 "positive number of patches (e.g. 256)")
  pp = release.pp.format(seq_len=seq_len)
  tokenizer = release.tokenizer
  init = args.get("init") or ""
  if tokenizer != "clip" and (init.startswith("hf:") or
                              os.path.exists(os.path.join(init, "config.json"))):
    tokenizer = None  # A Hugging Face directory's own tokenizer, unless tokenizer= is given.
  if "tokenizer" in args:
    tokenizer = args["tokenizer"] + (":pad=1" if tokenizer.endswith(":pad=1") else "")
  c = ml_collections.ConfigDict()
  c.model = release.model
  c.model_init = args.get("init")
  c.batch_size = 32
  c.total_steps = 1000
  c.lr = 1e-5                    # fine-tuning
  c.schedule = dict(warmup_steps=100, decay_type="cosine")
  c.optax = dict(name="adam", b1=0.9, b2=0.95)
  c.loss = "sigmoid" if release.model.get("bias_init") is not None else "softmax"
  # Fine-tuning input: the shapes dataset at the model's resolution, preprocessed as the model
  # was trained (point input.data at tar shards or a tfds dataset for real data). `tokenize`
  # takes input.tokenizer and the model's max_len.
  c.input = dict(
      data=dict(name="shapes", split="train"),
      pp=f"{pp}|choice(inkey='captions', outkey='text')|tokenize|keep('image', 'labels')",
      tokenizer=tokenizer)
  # Zero-shot ImageNet with CLIP's class names and 80 prompts (tfds imagenet2012, prepared).
  c.evals = dict(imagenet=dict(type="zeroshot", dataset="imagenet2012", split="validation",
                               classnames="clip", templates="clip", pp=f"decode|{pp}",
                               every_steps=1000))
  return c


def markdown_table() -> str:
  """docs/weights.md: the released models, their configs and published zero-shot ImageNet top-1."""
  rows = ["| model | config | weights | tokenizer | image preprocessing | ImageNet 0-shot top-1 "
          "(published) |", "|---|---|---|---|---|---|"]
  for name, r in RELEASED.items():
    tok = {"clip": "`clip` (built in)", _SIGLIP_TOK: "c4_en sentencepiece, padded with 1",
           _SIGLIP2_TOK: "Gemma sentencepiece (256k), padded with 0"}[r.tokenizer]
    rows.append(f"| {r.title} | `configs/pretrained/{name}.py` | {r.weights} | {tok} | "
                f"`{r.pp}` | {r.imagenet:.2f}% |".replace("|`", "| `").replace(
                    r.pp, r.pp.replace("|", "\\|")))
  return "\n".join(rows)
