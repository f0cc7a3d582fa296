"""Hugging Face `transformers` models <-> ours: state-dict tables, config.json, directories.

  config = weights.hf_config("path/or/hf:google/siglip2-base-patch16-224")  # {image, text, ...}
  params = weights.load_params("path/or/hf:...", config)

Supported classes (ARCHITECTURES): `SiglipModel` (SigLIP and fixed-resolution SigLIP 2),
`Siglip2Model` (SigLIP 2 NaFlex: the ViT's `naflex=True`, its position grid `posemb_grid`) and
`CLIPModel`. A model
directory holds `config.json` and `model.safetensors` (or shards listed in
`model.safetensors.index.json`, or `pytorch_model.bin` when torch is installed); a
`model.safetensors` file alone loads too, its class read from its keys. `hf:ORG/NAME` is a
repository id, found in huggingface_hub's cache (HF_HUB_CACHE) or downloaded where the network
allows.

The tables follow weights/open_clip.py's mechanism (one Entry per state-dict key, transforms
applied forwards to load and backwards to export).
"""

import json
import math
import os
from typing import Any, Iterator

import numpy as np

from big_vision_lite import errors
from big_vision_lite.weights.open_clip import Entry, _layernorm, _linear, tower_hparams

ARCHITECTURES = ("SiglipModel", "Siglip2Model", "CLIPModel")
LAYOUTS = {"SiglipModel": "hf_siglip", "Siglip2Model": "hf_siglip2", "CLIPModel": "hf_clip"}
HUB_PREFIX = "hf:"
CONFIG, SAFETENSORS, INDEX, TORCH_BIN = ("config.json", "model.safetensors",
                                         "model.safetensors.index.json", "pytorch_model.bin")

# transformers' `hidden_act` <-> ours (layers.ACTIVATIONS). 'gelu_new' is the tanh approximation.
ACTS_IN = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu",
           "quick_gelu": "quick_gelu"}
ACTS_OUT = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}

# The config classes' defaults (transformers 5.x), for keys a config.json leaves out.
_SIGLIP_TOWER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
DEFAULTS = {
    "SiglipModel": dict(
        text=dict(_SIGLIP_TOWER, vocab_size=32000, max_position_embeddings=64,
                  projection_size=None),
        vision=dict(_SIGLIP_TOWER, image_size=224, patch_size=16, num_channels=3,
                    vision_use_head=True)),
    "Siglip2Model": dict(
        text=dict(_SIGLIP_TOWER, vocab_size=32000, max_position_embeddings=64,
                  projection_size=None),
        vision=dict(_SIGLIP_TOWER, num_patches=256, patch_size=16, num_channels=3,
                    vision_use_head=True)),
    "CLIPModel": dict(
        text=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                  num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=224, patch_size=32, num_channels=3,
                    hidden_act="quick_gelu", layer_norm_eps=1e-5),
        top=dict(projection_dim=512, logit_scale_init_value=2.6592)),
}


class HFError(errors.Error, ValueError):
  """A Hugging Face directory, file or repository id that cannot be used; the message says why."""


# --- State-dict tables.

def _encoder_layer(tk: str, ours: str) -> Iterator[Entry]:
  """A transformers encoder layer (Siglip / CLIP) `tk` <-> our Encoder1DBlock `ours`."""
  att = f"{ours}/MultiHeadDotProductAttention_0"
  yield from _layernorm(f"{tk}.layer_norm1", f"{ours}/LayerNorm_0")
  for x, name in (("q", "query"), ("k", "key"), ("v", "value")):
    yield Entry((f"{tk}.self_attn.{x}_proj.weight",), (f"{att}/{name}/kernel",), "heads_in_weight")
    yield Entry((f"{tk}.self_attn.{x}_proj.bias",), (f"{att}/{name}/bias",), "heads_in_bias")
  yield Entry((f"{tk}.self_attn.out_proj.weight",), (f"{att}/out/kernel",), "heads_out_weight")
  yield Entry((f"{tk}.self_attn.out_proj.bias",), (f"{att}/out/bias",), "copy")
  yield from _layernorm(f"{tk}.layer_norm2", f"{ours}/LayerNorm_1")
  yield from _linear(f"{tk}.mlp.fc1", f"{ours}/MlpBlock_0/Dense_0")
  yield from _linear(f"{tk}.mlp.fc2", f"{ours}/MlpBlock_0/Dense_1")


def _map_head(tk: str, ours: str) -> Iterator[Entry]:
  """transformers' SiglipMultiheadAttentionPoolingHead <-> our MAPHead."""
  att = f"{ours}/MultiHeadDotProductAttention_0"
  qkv = ("query", "key", "value")
  yield Entry((f"{tk}.probe",), (f"{ours}/probe",), "copy")
  yield Entry((f"{tk}.attention.in_proj_weight",), tuple(f"{att}/{x}/kernel" for x in qkv),
              "in_proj_weight")
  yield Entry((f"{tk}.attention.in_proj_bias",), tuple(f"{att}/{x}/bias" for x in qkv),
              "in_proj_bias")
  yield Entry((f"{tk}.attention.out_proj.weight",), (f"{att}/out/kernel",), "heads_out_weight")
  yield Entry((f"{tk}.attention.out_proj.bias",), (f"{att}/out/bias",), "copy")
  yield from _layernorm(f"{tk}.layernorm", f"{ours}/LayerNorm_0")
  yield from _linear(f"{tk}.mlp.fc1", f"{ours}/MlpBlock_0/Dense_0")
  yield from _linear(f"{tk}.mlp.fc2", f"{ours}/MlpBlock_0/Dense_1")


def entries(model_config: dict[str, Any], layout: str) -> tuple[list[Entry], dict[str, int]]:
  """The state-dict table of a transformers model ('hf_siglip', 'hf_siglip2', 'hf_clip')
  shaped like `model_config`, and each tower's attention heads."""
  img, text = tower_hparams(model_config)
  v, t = "vision_model", "text_model"
  table = [Entry((f"{t}.embeddings.token_embedding.weight",), ("txt/Embed_0/embedding",), "copy"),
           Entry((f"{t}.embeddings.position_embedding.weight",), ("txt/pos_embedding",), "lead1")]
  for i in range(text["depth"]):
    table += _encoder_layer(f"{t}.encoder.layers.{i}", f"txt/Encoder_0/encoderblock_{i}")
  table += _layernorm(f"{t}.final_layer_norm", "txt/Encoder_0/encoder_norm")
  emb = f"{v}.embeddings"
  if layout == "hf_clip":
    table += [Entry((f"{emb}.class_embedding",), ("img/cls",), "cls"),
              Entry((f"{emb}.patch_embedding.weight",), ("img/embedding/kernel",), "conv"),
              Entry((f"{emb}.position_embedding.weight",), ("img/pos_embedding",), "lead1")]
    table += _layernorm(f"{v}.pre_layrnorm", "img/ln_pre")  # transformers' spelling
  elif layout == "hf_siglip2":  # NaFlex: a Linear over flattened patches, a flat G x G grid.
    table += _linear(f"{emb}.patch_embedding", "img/embedding")
    table.append(Entry((f"{emb}.position_embedding.weight",), ("img/pos_embedding",), "grid"))
  else:
    table += [Entry((f"{emb}.patch_embedding.weight",), ("img/embedding/kernel",), "conv"),
              Entry((f"{emb}.patch_embedding.bias",), ("img/embedding/bias",), "copy"),
              Entry((f"{emb}.position_embedding.weight",), ("img/pos_embedding",), "lead1")]
  for i in range(img["depth"]):
    table += _encoder_layer(f"{v}.encoder.layers.{i}", f"img/Transformer/encoderblock_{i}")
  table += _layernorm(f"{v}.post_layernorm", "img/Transformer/encoder_norm")
  if layout == "hf_clip":
    table += [Entry(("visual_projection.weight",), ("img/head/kernel",), "linear"),
              Entry(("text_projection.weight",), ("txt/head/kernel",), "linear"),
              Entry(("logit_scale",), ("t",), "scalar")]
  else:
    table += _map_head(f"{v}.head", "img/MAPHead_0")
    table += _linear(f"{t}.head", "txt/head")
    table += [Entry(("logit_scale",), ("t",), "copy"), Entry(("logit_bias",), ("b",), "copy")]
  return table, {"img": img["num_heads"], "txt": text["num_heads"]}


# --- Directories, files and repository ids.

def resolve(path: str) -> str:
  """`hf:ORG/NAME[@REVISION]` -> its local snapshot directory (huggingface_hub's cache, else a
  download); any other path is returned as it is."""
  if not path.startswith(HUB_PREFIX):
    return path
  repo, _, revision = path[len(HUB_PREFIX):].partition("@")
  import huggingface_hub  # pylint: disable=import-outside-toplevel  # slow import: only here
  # Read at call time (huggingface_hub reads HF_HUB_CACHE once, when it is imported).
  cache = os.environ.get("HF_HUB_CACHE") or None
  patterns = ["*.json", "*.safetensors", "*.model", "*.txt"]
  kw = dict(repo_id=repo, revision=revision or None, cache_dir=cache, allow_patterns=patterns)
  try:
    return huggingface_hub.snapshot_download(**kw, local_files_only=True)
  except Exception:  # pylint: disable=broad-except  # Not cached (each version says so its way).
    pass
  try:
    return huggingface_hub.snapshot_download(**kw)
  except Exception as e:  # pylint: disable=broad-except
    raise HFError(
        f"{path}: not in the Hugging Face cache ({cache or 'the default cache'}) and the download "
        f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Download it "
        f"where the network allows (`hf download {repo}`) and set HF_HUB_CACHE to that cache, or "
        "pass the model directory itself.") from e


def is_model_dir(path: str) -> bool:
  """Whether `path` (after `resolve`) is a transformers model directory: its config.json names
  a model type or architecture (a training run's workdir has a config.json of its own)."""
  file = os.path.join(path, CONFIG)
  if not (os.path.isdir(path) and os.path.exists(file)):
    return False
  try:
    with open(file, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(config, dict) and ("architectures" in config or "model_type" in config)


def read_config(path: str) -> dict[str, Any]:
  """config.json of the directory `path` (an `hf:` id, the config.json itself, or a weights
  file beside it), its class checked."""
  path = resolve(path)
  file = path if os.path.basename(path) == CONFIG else os.path.join(
      path if os.path.isdir(path) else os.path.dirname(path), CONFIG)
  if not os.path.exists(file):
    raise HFError(f"{path}: no {CONFIG}; expected a Hugging Face transformers model directory")
  with open(file, encoding="utf-8") as f:
    config = json.load(f)
  arch = (config.get("architectures") or [None])[0]
  if arch not in ARCHITECTURES:
    raise HFError(f"{file}: architecture {arch!r} (model_type {config.get('model_type')!r}) is "
                  f"not supported; supported: {', '.join(ARCHITECTURES)}")
  return config


def read_state(path: str) -> dict[str, np.ndarray]:
  """The state dict of a model directory: model.safetensors, its shards, or pytorch_model.bin."""
  from big_vision_lite.weights import _read_safetensors, _read_torch  # pylint: disable=import-outside-toplevel
  index = os.path.join(path, INDEX)
  if os.path.exists(os.path.join(path, SAFETENSORS)):
    return _read_safetensors(os.path.join(path, SAFETENSORS))
  if os.path.exists(index):
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    missing = [s for s in shards if not os.path.exists(os.path.join(path, s))]
    if missing:
      raise HFError(f"{path}: {INDEX} lists shards that are not there: {missing}; download the "
                    "whole repository (every model-*-of-*.safetensors)")
    state = {}
    for shard in shards:
      state.update(_read_safetensors(os.path.join(path, shard)))
    return state
  if os.path.exists(os.path.join(path, TORCH_BIN)):
    return _read_torch(os.path.join(path, TORCH_BIN))
  raise HFError(f"{path}: no {SAFETENSORS}, {INDEX} or {TORCH_BIN}; download the weights too")


def _tower(config: dict[str, Any], arch: str, which: str) -> dict[str, Any]:
  return {**DEFAULTS[arch][which], **(config.get(f"{which}_config") or {})}


def _act(name: str, where: str) -> str:
  if name not in ACTS_IN:
    raise HFError(f"{where}: hidden_act {name!r} has no counterpart here; supported: "
                  f"{sorted(ACTS_IN)}")
  return ACTS_IN[name]


def model_config(config: dict[str, Any], where: str = "config.json") -> dict[str, Any]:
  """A transformers config (config.json's dict) -> our `model` section (TwoTowers' arguments)."""
  arch = config["architectures"][0]
  text, vision = _tower(config, arch, "text"), _tower(config, arch, "vision")
  if vision["num_channels"] != 3:
    raise HFError(f"{where}: num_channels={vision['num_channels']}; only RGB (3) is supported")

  def sizes(tower, name):
    return dict(width=tower["hidden_size"], depth=tower["num_hidden_layers"],
                mlp_dim=tower["intermediate_size"], num_heads=tower["num_attention_heads"],
                act=_act(tower["hidden_act"], f"{where} {name}"), ln_eps=tower["layer_norm_eps"])

  patch = (vision["patch_size"],) * 2
  txt = dict(vocab_size=text["vocab_size"], max_len=text["max_position_embeddings"],
             **sizes(text, "text_config"))
  img = dict(patch_size=patch, **sizes(vision, "vision_config"))
  if arch == "CLIPModel":
    top = {**DEFAULTS[arch]["top"], **config}
    eos = text["eos_token_id"]
    if eos not in (2, text["vocab_size"] - 1):  # 2: transformers' legacy argmax pooling.
      raise HFError(f"{where}: text eos_token_id {eos} is not the largest id; CLIP towers here "
                    "pool at the largest token id (model.text.pool_type='argmax')")
    return dict(
        image=dict(img, image_size=vision["image_size"], pool_type="tok", posemb_cls=True,
                   ln_pre=True, patch_bias=False, head_bias=False),
        text=dict(txt, causal=True, pool_type="argmax", head_bias=False),
        out_dim=top["projection_dim"], temperature_init=float(np.exp(
            top["logit_scale_init_value"])), bias_init=None)
  if not vision["vision_use_head"]:
    raise HFError(f"{where}: vision_use_head=False (no attention-pooling head): SiglipModel "
                  "directories here need the MAP head")
  proj = text.get("projection_size") or text["hidden_size"]
  if arch == "Siglip2Model":  # NaFlex: the position embedding is a square grid of num_patches.
    grid = math.isqrt(vision["num_patches"])
    if grid * grid != vision["num_patches"]:
      raise HFError(f"{where}: vision_config.num_patches={vision['num_patches']} is not a square "
                    "number (the position-embedding grid is num_patches = G * G)")
    image = dict(img, naflex=True, posemb_grid=grid)
  else:
    image = dict(img, image_size=vision["image_size"])
  return dict(image=dict(image, pool_type="map"),
              text=dict(txt, pool_type="last"), out_dim=(None, proj),
              temperature_init=10.0, bias_init=-10.0)


def tokenizer_spec(path: str) -> str | None:
  """The tokenizer a model directory (or `hf:` id) carries, as a tokenizer.get spec, or None."""
  path = resolve(path)
  if not is_model_dir(path):
    return None
  arch = read_config(path)["architectures"][0]
  # SigLIP 2 (SiglipModel or Siglip2Model) carries Gemma's tokenizer.model (padded with 0);
  # SigLIP's spiece.model pads with its `</s>`, 1.
  files = {"SiglipModel": (("tokenizer.model", ""), ("spiece.model", ":pad=1")),
           "Siglip2Model": (("tokenizer.model", ""),), "CLIPModel": (("tokenizer.json", ""),)}
  for name, suffix in files[arch]:
    if os.path.exists(os.path.join(path, name)):
      return os.path.join(path, name) + suffix
  return None


# --- Export.

def _problems(model_config: dict[str, Any], arch: str) -> list[str]:
  """Why `model_config`'s model does not fit transformers' `arch` (empty if it does)."""
  image, text = model_config["image"], model_config["text"]
  problems = []
  if model_config.get("classes"):
    problems.append("model.classes is set (an image classifier, not a two-tower model)")
  if image.get("type", "vit") not in (None, "vit"):
    problems.append(f"model.image.type={image['type']!r} ({arch} has a ViT image tower)")
    return problems
  dims = model_config.get("out_dim")
  dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims, dims)
  if arch == "CLIPModel":
    vit = dict(pool_type="tok", posemb="learn", posemb_cls=True, ln_pre=True, patch_bias=False,
               head_bias=False)
    txt = dict(causal=True, pool_type="argmax", head_bias=False)
    if dims[0] is None or dims[0] != dims[1]:
      problems.append(f"model.out_dim={model_config.get('out_dim')!r} (CLIPModel projects both "
                      "towers to one projection_dim)")
    if model_config.get("bias_init") is not None:
      problems.append("model.bias_init is set (CLIPModel has no logit bias)")
  else:
    vit = dict(pool_type="map", posemb="learn", posemb_cls=False, ln_pre=False, patch_bias=True)
    txt = dict(causal=False, pool_type="last", head_bias=True)
    if dims[0] is not None:
      problems.append(f"model.out_dim={model_config.get('out_dim')!r}: an image projection head "
                      f"({arch}'s image embedding is the MAP head's output; use out_dim=(None, D))")
    if dims[1] is None:
      problems.append(f"model.out_dim={model_config.get('out_dim')!r}: no text head ({arch}'s text "
                      "tower ends in a Dense head)")
    if model_config.get("bias_init") is None:
      problems.append(f"model.bias_init=None ({arch} has a logit bias)")
  defaults = dict(pool_type="map", posemb="learn", posemb_cls=False, ln_pre=False,
                  patch_bias=True, head_bias=True, causal=False)
  problems += [f"model.image.{k}={image.get(k, defaults[k])!r} ({arch}: {v!r})"
               for k, v in vit.items() if image.get(k, defaults[k]) != v]
  defaults.update(pool_type="last")
  problems += [f"model.text.{k}={text.get(k, defaults[k])!r} ({arch}: {v!r})"
               for k, v in txt.items() if text.get(k, defaults[k]) != v]
  for tower in ("image", "text"):
    act = model_config[tower].get("act", "gelu_tanh")
    if act not in ACTS_OUT:
      problems.append(f"model.{tower}.act={act!r} (transformers has {sorted(ACTS_OUT)})")
  if not image.get("image_size") and arch != "Siglip2Model":
    problems.append("model.image.image_size is not set (config.json records it)")
  if not text.get("max_len"):
    problems.append("model.text.max_len is not set (config.json records it)")
  return problems


def architecture(model_config: dict[str, Any]) -> str:
  """The transformers class for our model: Siglip2Model for the NaFlex ViT, CLIPModel for
  class-token ViTs, else SiglipModel."""
  if model_config["image"].get("naflex"):
    return "Siglip2Model"
  return "CLIPModel" if model_config["image"].get("pool_type") == "tok" else "SiglipModel"


def export_config(model_config: dict[str, Any]) -> dict[str, Any]:
  """Our model config -> transformers' config.json (every size written out); raises HFError
  naming what the class cannot hold."""
  arch = architecture(model_config)
  problems = _problems(model_config, arch)
  if problems:
    raise HFError(f"cannot export as a Hugging Face {arch}: this model has\n  " +
                  "\n  ".join(problems) + "\nExport as npz (big_vision's layout) instead.")
  img, text = tower_hparams(model_config)
  image, txt = model_config["image"], model_config["text"]

  def tower(hp, cfg):
    return dict(hidden_size=hp["width"], intermediate_size=hp["mlp_dim"],
                num_hidden_layers=hp["depth"], num_attention_heads=hp["num_heads"],
                hidden_act=ACTS_OUT[cfg.get("act", "gelu_tanh")],
                layer_norm_eps=cfg.get("ln_eps", 1e-6))

  text_config = dict(tower(text, txt), vocab_size=txt["vocab_size"],
                     max_position_embeddings=txt["max_len"])
  vision_config = dict(tower(img, image), patch_size=img["patch_size"][0], num_channels=3)
  if arch == "Siglip2Model":
    vision_config.update(num_patches=image.get("posemb_grid", 16) ** 2)
  else:
    vision_config.update(image_size=image["image_size"])
  if img["patch_size"][0] != img["patch_size"][1]:
    raise HFError(f"cannot export as a Hugging Face {arch}: patch_size {img['patch_size']} is not "
                  "square (transformers' patch_size is one number)")
  dims = model_config["out_dim"]
  dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims, dims)
  if arch == "CLIPModel":
    text_config.update(eos_token_id=txt["vocab_size"] - 1, projection_dim=dims[0])
    vision_config.update(projection_dim=dims[0])
    return dict(architectures=[arch], model_type="clip", text_config=text_config,
                vision_config=vision_config, projection_dim=dims[0],
                logit_scale_init_value=float(np.log(model_config.get("temperature_init", 10.))),
                torch_dtype="float32")
  if dims[1] != img["width"]:
    raise HFError(f"cannot export as a Hugging Face {arch}: the text head's {dims[1]} outputs "
                  f"differ from the image width {img['width']} ({arch} compares the two "
                  "directly)")
  text_config.update(projection_size=dims[1])
  vision_config.update(vision_use_head=True)
  return dict(architectures=[arch], model_type=arch[:-len("Model")].lower(),
              text_config=text_config, vision_config=vision_config, torch_dtype="float32")


def export_state(flat: dict[str, np.ndarray], model_config: dict[str, Any]
                 ) -> dict[str, np.ndarray]:
  """{our name: array} (unscanned) -> the transformers state dict of export_config's class."""
  from big_vision_lite.weights import open_clip  # pylint: disable=import-outside-toplevel
  table = entries(model_config, LAYOUTS[architecture(model_config)])
  state = open_clip.unconvert(flat, *table)
  written, _ = open_clip.convert(state, *table)
  left = sorted(set(flat) - set(written))
  if left:
    raise HFError(f"cannot export as a Hugging Face directory: no transformers key for {left}; "
                  "export as npz instead.")
  return state


GEMMA_PIECES = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0-3 of Gemma's sentencepiece model


def gemma_tokenizer_config(path: str, max_len: int) -> dict[str, Any] | None:
  """tokenizer_config.json with which transformers' GemmaTokenizer gives our ids (lowercased
  text, no BOS, EOS kept on truncation, right-padded with 0 to `max_len`), for a sentencepiece
  model laid out as Gemma's (GEMMA_PIECES); None for any other model."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=path)
  if tuple(sp.id_to_piece(i) for i in range(4)) != GEMMA_PIECES:
    return None
  return dict(tokenizer_class="GemmaTokenizer", add_bos_token=False, add_eos_token=True,
              padding_side="right", model_max_length=max_len)


def tokenizer_files(spec: str | None, arch: str, max_len: int
                    ) -> tuple[dict[str, str], dict[str, Any] | None]:
  """({file name in the directory: source file}, tokenizer_config.json or None) for the run's
  tokenizer spec: a sentencepiece model as SiglipModel carries it (`spiece.model` padded with
  1, Gemma's `tokenizer.model` padded with 0, with a GemmaTokenizer config when laid out as
  Gemma's), a CLIP `tokenizer.json`; nothing where we have none to give."""
  if not spec:
    return {}, None
  path, _, pad = spec.partition(":pad=")
  if arch in ("SiglipModel", "Siglip2Model") and path.endswith(".model") and os.path.exists(path):
    if arch == "SiglipModel" and pad == "1":
      return {"spiece.model": path}, None
    if pad and pad != "0":
      return {}, None
    return {"tokenizer.model": path}, gemma_tokenizer_config(path, max_len)
  if arch == "CLIPModel" and path.endswith(".json") and os.path.exists(path):
    return {"tokenizer.json": path}, None
  return {}, None
