"""PyTorch state dicts <-> our parameter names, both ways: the one mapping mechanism.

A table, built from the model config, lists every state-dict key of a model with that
architecture, the parameters it becomes and the transform between the two layouts (torch Linear
[out, in] vs Flax kernels [in, out] or [in, heads, head_dim]; conv OIHW vs HWIO; the packed
q/k/v `in_proj`; batch norm's running statistics folded into a per-channel scale and bias).
Loading applies the transforms forwards, export backwards, so the two are inverses by
construction (`convert`, `unconvert`).

This module holds the tables of open_clip / OpenAI CLIP state dicts and of open_clip's SigLIP
models (a timm trunk under `visual.trunk.`); weights/hf.py holds those of Hugging Face
`transformers` models. `layout(state)` tells which one a state dict is.
"""

import math
import re
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from big_vision_lite.models.resnet import ResNet
from big_vision_lite.models.text import TextTransformer
from big_vision_lite.models.two_towers import image_tower_type
from big_vision_lite.models.vit import ViT

BN_EPS = 1e-5  # torch's BatchNorm2d default, used by CLIP's ResNets.
# Keys some state dicts carry that are not parameters: OpenAI's TorchScript archives store the
# input sizes, torch's batch norm counts its updates.
# transformers' position-id buffers (saved by older versions) are not parameters either.
IGNORED = re.compile(
    r"(input_resolution|context_length|vocab_size|.*num_batches_tracked|.*position_ids)")


class Entry(NamedTuple):
  """State-dict keys <-> our parameter names, and the transform between them."""

  torch_keys: tuple[str, ...]
  names: tuple[str, ...]
  transform: str


def _split_heads(w: np.ndarray, heads: int) -> np.ndarray:
  return w.reshape(w.shape[0], heads, w.shape[1] // heads)  # [in, out] -> [in, H, out / H]


def _fold_bn(w, b, mean, var):
  # float64 so that export's unfolded statistics (mean 0, var 1 - eps) fold back bit-exactly.
  scale = w.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
  return [scale.astype(np.float32), (b - mean * scale).astype(np.float32)]


def _unfold_bn(scale, bias):
  c = scale.shape[0]
  # running_var = 1 - eps makes torch's (x - 0) / sqrt(var + eps) * w + b exactly x * w + b.
  return [scale, bias, np.zeros(c, np.float32), np.full(c, 1 - BN_EPS, np.float32)]


# transform -> (state-dict arrays -> our arrays, our arrays -> state-dict arrays); `h` = heads.
TRANSFORMS: dict[str, tuple[Callable[..., list], Callable[..., list]]] = {
    "copy": (lambda a, h: a, lambda a, h: a),
    "linear": (lambda a, h: [a[0].T], lambda a, h: [a[0].T]),
    "conv": (lambda a, h: [a[0].transpose(2, 3, 1, 0)], lambda a, h: [a[0].transpose(3, 2, 0, 1)]),
    "lead1": (lambda a, h: [a[0][None]], lambda a, h: [a[0][0]]),
    "cls": (lambda a, h: [a[0].reshape(1, 1, -1)], lambda a, h: [a[0].reshape(-1)]),
    "scalar": (lambda a, h: [a[0].reshape(1)], lambda a, h: [a[0].reshape(())]),
    "in_proj_weight": (lambda a, h: [_split_heads(w.T, h) for w in np.split(a[0], 3)],
                       lambda a, h: [np.concatenate([w.reshape(w.shape[0], -1).T for w in a])]),
    "in_proj_bias": (lambda a, h: [b.reshape(h, -1) for b in np.split(a[0], 3)],
                     lambda a, h: [np.concatenate([b.reshape(-1) for b in a])]),
    # timm's attention pool packs key and value only (`kv`), the query comes from the latent.
    "kv_weight": (lambda a, h: [_split_heads(w.T, h) for w in np.split(a[0], 2)],
                  lambda a, h: [np.concatenate([w.reshape(w.shape[0], -1).T for w in a])]),
    "kv_bias": (lambda a, h: [b.reshape(h, -1) for b in np.split(a[0], 2)],
                lambda a, h: [np.concatenate([b.reshape(-1) for b in a])]),
    "heads_in_weight": (lambda a, h: [_split_heads(a[0].T, h)],
                        lambda a, h: [a[0].reshape(a[0].shape[0], -1).T]),
    "heads_in_bias": (lambda a, h: [a[0].reshape(h, -1)], lambda a, h: [a[0].reshape(-1)]),
    "heads_out_weight": (lambda a, h: [a[0].T.reshape(h, -1, a[0].shape[0])],
                         lambda a, h: [a[0].reshape(-1, a[0].shape[-1]).T]),
    "bn": (lambda a, h: _fold_bn(*a), lambda a, h: _unfold_bn(*a)),
    # A square position grid stored flat ([G * G, D], transformers' Siglip2) <-> [G, G, D].
    "grid": (lambda a, h: [a[0].reshape(math.isqrt(a[0].shape[0]), -1, a[0].shape[-1])],
             lambda a, h: [a[0].reshape(-1, a[0].shape[-1])]),
}


def _resblock(tk: str, ours: str) -> Iterator[Entry]:
  """A CLIP ResidualAttentionBlock `tk` <-> our Encoder1DBlock `ours`."""
  att = f"{ours}/MultiHeadDotProductAttention_0"
  qkv = tuple(f"{att}/{x}" for x in ("query", "key", "value"))
  for i, ln in ((1, "LayerNorm_0"), (2, "LayerNorm_1")):
    yield Entry((f"{tk}.ln_{i}.weight",), (f"{ours}/{ln}/scale",), "copy")
    yield Entry((f"{tk}.ln_{i}.bias",), (f"{ours}/{ln}/bias",), "copy")
  yield Entry((f"{tk}.attn.in_proj_weight",), tuple(f"{n}/kernel" for n in qkv), "in_proj_weight")
  yield Entry((f"{tk}.attn.in_proj_bias",), tuple(f"{n}/bias" for n in qkv), "in_proj_bias")
  yield Entry((f"{tk}.attn.out_proj.weight",), (f"{att}/out/kernel",), "heads_out_weight")
  yield Entry((f"{tk}.attn.out_proj.bias",), (f"{att}/out/bias",), "copy")
  for layer, dense in (("c_fc", "Dense_0"), ("c_proj", "Dense_1")):
    yield Entry((f"{tk}.mlp.{layer}.weight",), (f"{ours}/MlpBlock_0/{dense}/kernel",), "linear")
    yield Entry((f"{tk}.mlp.{layer}.bias",), (f"{ours}/MlpBlock_0/{dense}/bias",), "copy")


def _layernorm(tk: str, ours: str) -> Iterator[Entry]:
  yield Entry((f"{tk}.weight",), (f"{ours}/scale",), "copy")
  yield Entry((f"{tk}.bias",), (f"{ours}/bias",), "copy")


def _bn(tk: str, ours: str) -> Entry:
  return Entry(tuple(f"{tk}.{x}" for x in ("weight", "bias", "running_mean", "running_var")),
               (f"{ours}/scale", f"{ours}/bias"), "bn")


def _vit_entries(depth: int) -> Iterator[Entry]:
  yield Entry(("visual.class_embedding",), ("img/cls",), "cls")
  yield Entry(("visual.positional_embedding",), ("img/pos_embedding",), "lead1")
  yield Entry(("visual.conv1.weight",), ("img/embedding/kernel",), "conv")
  yield from _layernorm("visual.ln_pre", "img/ln_pre")
  for i in range(depth):
    yield from _resblock(f"visual.transformer.resblocks.{i}", f"img/Transformer/encoderblock_{i}")
  yield from _layernorm("visual.ln_post", "img/Transformer/encoder_norm")
  yield Entry(("visual.proj",), ("img/head/kernel",), "copy")


def _resnet_entries(layers: tuple[int, ...]) -> Iterator[Entry]:
  for k in (1, 2, 3):
    yield Entry((f"visual.conv{k}.weight",), (f"img/conv{k}/kernel",), "conv")
    yield _bn(f"visual.bn{k}", f"img/bn{k}")
  for stage, blocks in enumerate(layers, 1):
    for i in range(blocks):
      tk, ours = f"visual.layer{stage}.{i}", f"img/layer{stage}_{i}"
      for k in (1, 2, 3):
        yield Entry((f"{tk}.conv{k}.weight",), (f"{ours}/conv{k}/kernel",), "conv")
        yield _bn(f"{tk}.bn{k}", f"{ours}/bn{k}")
      # Only blocks that change shape have a downsample branch; loading skips absent keys.
      yield Entry((f"{tk}.downsample.0.weight",), (f"{ours}/downsample_conv/kernel",), "conv")
      yield _bn(f"{tk}.downsample.1", f"{ours}/downsample_bn")
  att = "img/attnpool/MultiHeadDotProductAttention_0"
  yield Entry(("visual.attnpool.positional_embedding",), ("img/attnpool/pos_embedding",), "lead1")
  for tk, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
    yield Entry((f"visual.attnpool.{tk}.weight",), (f"{att}/{ours}/kernel",), "heads_in_weight")
    yield Entry((f"visual.attnpool.{tk}.bias",), (f"{att}/{ours}/bias",), "heads_in_bias")
  yield Entry(("visual.attnpool.c_proj.weight",), (f"{att}/out/kernel",), "heads_out_weight")
  yield Entry(("visual.attnpool.c_proj.bias",), (f"{att}/out/bias",), "copy")


def _text_entries(depth: int, siglip: bool = False) -> Iterator[Entry]:
  """open_clip's text tower: CLIP's, or SigLIP's (a separate `text.` module whose projection
  is an nn.Linear with a bias)."""
  prefix = "text." if siglip else ""
  yield Entry((f"{prefix}token_embedding.weight",), ("txt/Embed_0/embedding",), "copy")
  yield Entry((f"{prefix}positional_embedding",), ("txt/pos_embedding",), "lead1")
  for i in range(depth):
    yield from _resblock(f"{prefix}transformer.resblocks.{i}", f"txt/Encoder_0/encoderblock_{i}")
  yield from _layernorm(f"{prefix}ln_final", "txt/Encoder_0/encoder_norm")
  if siglip:
    yield from _linear("text.text_projection", "txt/head")
  else:
    yield Entry(("text_projection",), ("txt/head/kernel",), "copy")
  yield Entry(("logit_scale",), ("t",), "scalar")
  yield Entry(("logit_bias",), ("b",), "scalar")


def _timm_map_head(tk: str, ours: str) -> Iterator[Entry]:
  """timm's AttentionPoolLatent `tk` <-> our MAPHead `ours` (big_vision's MAP head)."""
  att = f"{ours}/MultiHeadDotProductAttention_0"
  yield Entry((f"{tk}.latent",), (f"{ours}/probe",), "copy")
  yield Entry((f"{tk}.q.weight",), (f"{att}/query/kernel",), "heads_in_weight")
  yield Entry((f"{tk}.q.bias",), (f"{att}/query/bias",), "heads_in_bias")
  yield Entry((f"{tk}.kv.weight",), (f"{att}/key/kernel", f"{att}/value/kernel"), "kv_weight")
  yield Entry((f"{tk}.kv.bias",), (f"{att}/key/bias", f"{att}/value/bias"), "kv_bias")
  yield Entry((f"{tk}.proj.weight",), (f"{att}/out/kernel",), "heads_out_weight")
  yield Entry((f"{tk}.proj.bias",), (f"{att}/out/bias",), "copy")
  yield from _layernorm(f"{tk}.norm", f"{ours}/LayerNorm_0")
  yield from _linear(f"{tk}.mlp.fc1", f"{ours}/MlpBlock_0/Dense_0")
  yield from _linear(f"{tk}.mlp.fc2", f"{ours}/MlpBlock_0/Dense_1")


def _linear(tk: str, ours: str) -> Iterator[Entry]:
  yield Entry((f"{tk}.weight",), (f"{ours}/kernel",), "linear")
  yield Entry((f"{tk}.bias",), (f"{ours}/bias",), "copy")


def _timm_vit_entries(depth: int) -> Iterator[Entry]:
  """open_clip's SigLIP image tower: a timm VisionTransformer (MAP pooling) under `visual.trunk`."""
  trunk = "visual.trunk"
  yield Entry((f"{trunk}.patch_embed.proj.weight",), ("img/embedding/kernel",), "conv")
  yield Entry((f"{trunk}.patch_embed.proj.bias",), ("img/embedding/bias",), "copy")
  yield Entry((f"{trunk}.pos_embed",), ("img/pos_embedding",), "copy")
  for i in range(depth):
    tk, ours = f"{trunk}.blocks.{i}", f"img/Transformer/encoderblock_{i}"
    att = f"{ours}/MultiHeadDotProductAttention_0"
    yield from _layernorm(f"{tk}.norm1", f"{ours}/LayerNorm_0")
    yield Entry((f"{tk}.attn.qkv.weight",), tuple(f"{att}/{x}/kernel" for x in
                                                   ("query", "key", "value")), "in_proj_weight")
    yield Entry((f"{tk}.attn.qkv.bias",), tuple(f"{att}/{x}/bias" for x in
                                                 ("query", "key", "value")), "in_proj_bias")
    yield Entry((f"{tk}.attn.proj.weight",), (f"{att}/out/kernel",), "heads_out_weight")
    yield Entry((f"{tk}.attn.proj.bias",), (f"{att}/out/bias",), "copy")
    yield from _layernorm(f"{tk}.norm2", f"{ours}/LayerNorm_1")
    yield from _linear(f"{tk}.mlp.fc1", f"{ours}/MlpBlock_0/Dense_0")
    yield from _linear(f"{tk}.mlp.fc2", f"{ours}/MlpBlock_0/Dense_1")
  yield from _layernorm(f"{trunk}.norm", "img/Transformer/encoder_norm")
  yield from _timm_map_head(f"{trunk}.attn_pool", "img/MAPHead_0")
  yield from _linear("visual.head.proj", "img/head")  # Only where open_clip adds a projection.


def tower_hparams(model_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """The image and text towers' resolved hyper-parameters (width, depth, heads, ...)."""
  image = {k: v for k, v in model_config["image"].items() if k != "type"}
  tower = ResNet if image_tower_type(model_config["image"]) == "resnet" else ViT
  return tower(**image).hparams(), TextTransformer(**model_config["text"]).hparams()


def entries(model_config: dict[str, Any], layout: str = "open_clip"
            ) -> tuple[list[Entry], dict[str, int]]:
  """The state-dict table of an open_clip model shaped like `model_config` ('open_clip': CLIP;
  'timm_siglip': SigLIP with a timm trunk), and each tower's attention heads ({'img': H, ...})."""
  img, text = tower_hparams(model_config)
  if layout == "timm_siglip":
    table = list(_text_entries(text["depth"], siglip=True)) + list(_timm_vit_entries(img["depth"]))
  elif image_tower_type(model_config["image"]) == "resnet":
    table = list(_text_entries(text["depth"])) + list(_resnet_entries(img["layers"]))
  else:
    table = list(_text_entries(text["depth"])) + list(_vit_entries(img["depth"]))
  return table, {"img": img["num_heads"], "txt": text["num_heads"]}


def layout(state: dict[str, Any]) -> str:
  """Which table a state dict's keys follow: 'open_clip', 'timm_siglip', or one of
  weights/hf.py's ('hf_siglip', 'hf_siglip2', 'hf_clip')."""
  keys = {k.removeprefix("module.") for k in state}
  if any(k.startswith("visual.trunk.") for k in keys):
    return "timm_siglip"
  if "vision_model.embeddings.class_embedding" in keys:
    return "hf_clip"
  patch = state.get("vision_model.embeddings.patch_embedding.weight")
  if patch is not None:
    return "hf_siglip2" if np.ndim(patch) == 2 else "hf_siglip"
  if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
    return "hf_siglip"
  return "open_clip"


def convert(state: dict[str, np.ndarray], table: list[Entry], heads: dict[str, int]
            ) -> tuple[dict[str, np.ndarray], list[str]]:
  """A state dict -> ({our name: array}, state-dict keys the table does not know)."""
  state = {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved checkpoints.
  out, used = {}, set()
  for entry in table:
    if not all(k in state for k in entry.torch_keys):
      continue  # Absent here: the parameter check names what the model misses.
    arrays = [np.asarray(state[k], np.float32) for k in entry.torch_keys]
    converted = TRANSFORMS[entry.transform][0](arrays, heads.get(entry.names[0].split("/")[0]))
    out.update(zip(entry.names, converted))
    used.update(entry.torch_keys)
  unknown = sorted(k for k in state if k not in used and not IGNORED.fullmatch(k))
  return out, unknown


def unconvert(flat: dict[str, np.ndarray], table: list[Entry], heads: dict[str, int]
              ) -> dict[str, np.ndarray]:
  """{our name: array} (unscanned) -> the state dict, for every table entry present."""
  state = {}
  for entry in table:
    if not all(n in flat for n in entry.names):
      continue
    arrays = [np.asarray(flat[n], np.float32) for n in entry.names]
    converted = TRANSFORMS[entry.transform][1](arrays, heads.get(entry.names[0].split("/")[0]))
    state.update(zip(entry.torch_keys, converted))
    if entry.transform == "bn":  # torch's strict load_state_dict expects the counter.
      state[entry.torch_keys[0].rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
  return {k: np.array(v, order="C") for k, v in state.items()}
