"""Model weights: load checkpoints into TwoTowers' parameter tree, and export ours.

  params = weights.load_params(path, model_config)  # host numpy float32, as model.init's tree
  weights.export(params, model_config, "model.npz", "npz")  # big_vision's layout
  weights.export(params, model_config, "model.safetensors", "safetensors")  # open_clip's layout
  weights.export(params, model_config, "out_dir", "hf", tokenizer=spec)  # transformers' layout

`path` holds one of:
- a big_vision .npz (flat '/'-joined names, with or without a 'params/' prefix), SigLIP 2's
  NaFlex ones included (model.image.naflex=True);
- an Orbax checkpoint of this project (parameters only): a run's checkpoints/ directory (its
  newest step), one step directory, or the workdir itself;
- a PyTorch state dict: .safetensors (read without torch), or .pt / .bin when torch is installed
  (`pip install -e '.[torch]'`), of open_clip / OpenAI CLIP, open_clip's SigLIP (timm trunk,
  `visual.trunk.*`) or a Hugging Face `transformers` model; the layout is told by its keys
  (weights/open_clip.py holds the mapping mechanism and open_clip's tables);
- a Hugging Face `transformers` model directory (config.json + model.safetensors, or shards
  listed in model.safetensors.index.json) of SiglipModel, Siglip2Model (NaFlex) or CLIPModel,
  or a repository id
  `hf:ORG/NAME` from huggingface_hub's cache (weights/hf.py). `hf_config(path)` gives the
  model config that matches it.

As it loads, the checkpoint is fitted to the model: encoder blocks stacked or unstacked to the
model's `scan`; image position embeddings resampled to the configured resolution (bilinear zoom
of the token grid as big_vision does; a class-token position is kept); text position
embeddings cut to a shorter `max_len`; `dont_load` parameters taken from `init_params`.
"""

import math
import os
import re
import zipfile
from typing import Any, Sequence

import jax
import ml_dtypes
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import errors, pytree
from big_vision_lite.models.two_towers import TwoTowers, image_tower_type
from big_vision_lite.weights import hf, open_clip

FORMATS = ("npz", "safetensors", "hf")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class WeightsError(errors.Error, ValueError):
  """A checkpoint that cannot be read, or that does not fit the model; the message says why."""


def _plain(model_config) -> dict[str, Any]:
  return model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)


def target_shapes(model_config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  """{parameter name: shape} of `TwoTowers(**model_config)` at its image_size and max_len."""
  model = TwoTowers(**model_config)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())["params"]
  return {n: tuple(x.shape) for n, x in pytree.named_leaves(abstract)}


def hf_config(path: str) -> dict[str, Any]:
  """Our model config (TwoTowers' arguments) for a Hugging Face model directory, its
  config.json, or an `hf:ORG/NAME` repository id."""
  return hf.model_config(hf.read_config(path), path)


# --- Reading: each format -> ({name: array}, the state-dict layout or None for our names).

def _damaged(path: str, kind: str, e: BaseException) -> WeightsError:
  return WeightsError(f"{path} is not a readable {kind} ({type(e).__name__}: {e}); the file is "
                      "damaged or cut short (compare its size with the original's): download or "
                      "export it again")


def _read_npz(path: str) -> dict[str, np.ndarray]:
  # An .npz is a zip of .npy arrays. Anything else is refused before numpy sees it: numpy
  # takes a file that is neither zip nor .npy for a pickle, which is never loaded here.
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(4)
    what = ("it is empty" if not head else "its zip directory (at the end) is missing: it was cut "
            "short" if head == b"PK\x03\x04" else f"it starts with {head!r}, not a zip's "
            "b'PK\\x03\\x04'")
    raise WeightsError(f"{path} is not a readable .npz (a zip of .npy arrays): {what}; the file "
                       "is damaged or cut short, or not an .npz: download or export it again")
  try:
    with np.load(path, allow_pickle=False) as z:
      flat = {k: z[k] for k in z.files}
  except ValueError as e:
    if "allow_pickle" not in str(e):
      raise _damaged(path, ".npz", e) from None
    raise WeightsError(f"{path} holds object (pickled) arrays, which are never unpickled here "
                       "(loading one can run any code): save the parameters as numeric "
                       "arrays") from None
  except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise _damaged(path, ".npz", e) from None
  if any(k.startswith("params/") for k in flat):  # A full train state: keep its parameters.
    flat = {k[len("params/"):]: v for k, v in flat.items() if k.startswith("params/")}
  # numpy stores bfloat16 as 2-byte void.
  return {k: v.view(ml_dtypes.bfloat16) if v.dtype.kind == "V" and v.itemsize == 2 else v
          for k, v in flat.items()}


def _read_orbax(path: str) -> dict[str, np.ndarray]:
  path = os.path.abspath(path)
  step = None
  if os.path.basename(path).isdigit():  # One step directory.
    path, step = os.path.dirname(path), int(os.path.basename(path))
  elif os.path.isdir(os.path.join(path, "checkpoints")):  # A run's workdir.
    path = os.path.join(path, "checkpoints")
  return dict(pytree.named_leaves(ckpt_lib.restore_params(path, step)))


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError, safe_open  # pylint: disable=import-outside-toplevel
  try:
    with safe_open(path, framework="numpy") as f:
      keys = list(f.keys())
      # numpy has no bfloat16: such files are read through the flax API (bfloat16 jax arrays).
      framework = "flax" if any(f.get_slice(k).get_dtype() == "BF16" for k in keys) else "numpy"
    with safe_open(path, framework=framework) as f:
      return {k: np.asarray(f.get_tensor(k)) for k in keys}
  except (SafetensorError, OSError, ValueError) as e:
    raise _damaged(path, ".safetensors", e) from None


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise WeightsError(
        f"{path}: reading a PyTorch checkpoint needs torch: pip install -e '.[torch]', or "
        "convert it once to .safetensors where torch is installed:\n  python -c \"import torch, "
        "safetensors.torch as st; sd = torch.load('IN.pt', map_location='cpu'); "
        "sd = sd.get('state_dict', sd); st.save_file({k: v.float().contiguous() for k, v in "
        "sd.items()}, 'OUT.safetensors')\"\n(OpenAI's TorchScript .pt files: "
        "sd = torch.jit.load('IN.pt', map_location='cpu').state_dict())") from None
  try:  # OpenAI's released .pt files are TorchScript archives.
    state = torch.jit.load(path, map_location="cpu").state_dict()
  except RuntimeError:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)  # open_clip's training checkpoints nest it.
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def read(path: str) -> tuple[dict[str, np.ndarray], str | None]:
  """The checkpoint at `path` as ({name: array}, its state-dict layout (open_clip.layout) or
  None when the names are ours)."""
  path = hf.resolve(path)
  if not os.path.exists(path):
    raise WeightsError(f"checkpoint {path!r} not found")
  if hf.is_model_dir(path) or path.endswith(hf.INDEX):
    state = hf.read_state(path if os.path.isdir(path) else os.path.dirname(path))
  elif os.path.isdir(path):
    return _read_orbax(path), None
  elif path.endswith(".npz"):
    return _read_npz(path), None
  elif path.endswith(".safetensors"):
    state = _read_safetensors(path)
  elif path.endswith(TORCH_SUFFIXES):
    state = _read_torch(path)
  else:
    raise WeightsError(f"{path}: unknown checkpoint format; expected a big_vision .npz, an Orbax "
                       "checkpoint directory, a PyTorch state dict (.safetensors, .pt, .bin) or a "
                       "Hugging Face model directory")
  return state, open_clip.layout(state)


def _table(layout: str, model_config: dict[str, Any]):
  """The state-dict table (and attention heads) of `layout` for a model like `model_config`."""
  if layout.startswith("hf_"):
    return hf.entries(model_config, layout)
  return open_clip.entries(model_config, layout)


# --- Fitting a checkpoint to the model.

def _stack_blocks(flat: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """`prefix/encoderblock_{i}/...` -> `prefix/encoderblock/...` stacked on a leading axis."""
  pattern = re.compile(re.escape(prefix) + r"/encoderblock_(\d+)/(.+)")
  groups: dict[str, dict[int, np.ndarray]] = {}
  out = {}
  for name, x in flat.items():
    if m := pattern.fullmatch(name):
      groups.setdefault(m[2], {})[int(m[1])] = x
    else:
      out[name] = x
  for rest, blocks in groups.items():
    out[f"{prefix}/encoderblock/{rest}"] = np.stack([blocks[i] for i in sorted(blocks)])
  return out


def _unstack_blocks(flat: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """`prefix/encoderblock/...` [depth, ...] -> `prefix/encoderblock_{i}/...`."""
  out = {}
  for name, x in flat.items():
    if name.startswith(f"{prefix}/encoderblock/"):
      rest = name[len(prefix) + len("/encoderblock/"):]
      out.update({f"{prefix}/encoderblock_{i}/{rest}": x[i] for i in range(x.shape[0])})
    else:
      out[name] = x
  return out


def _encoder_prefixes(names, scanned: bool) -> set[str]:
  pattern = r"(.*)/encoderblock/.*" if scanned else r"(.*)/encoderblock_\d+/.*"
  return {m[1] for n in names if (m := re.fullmatch(pattern, n))}


def resample_posemb(old: np.ndarray, new_tokens: int, num_prefix: int) -> np.ndarray | None:
  """[1, P + n*n, D] -> [1, new_tokens, D] by bilinear zoom of the n x n grid (big_vision's
  `scipy.ndimage.zoom(order=1)`), keeping the P leading (class-token) positions; None when
  either grid is not square."""
  grid = old[0, num_prefix:]
  gs_old, gs_new = math.isqrt(grid.shape[0]), math.isqrt(new_tokens - num_prefix)
  if gs_old ** 2 != grid.shape[0] or gs_new ** 2 != new_tokens - num_prefix:
    return None
  zoom = (gs_new / gs_old, gs_new / gs_old, 1)
  import scipy.ndimage  # pylint: disable=import-outside-toplevel  # 0.5 s to import: only here
  grid = scipy.ndimage.zoom(grid.reshape(gs_old, gs_old, -1), zoom, order=1)
  return np.concatenate([old[:, :num_prefix], grid.reshape(1, gs_new ** 2, -1)], axis=1)


def _check_naflex(flat: dict[str, np.ndarray], want: dict[str, tuple[int, ...]],
                  path: str) -> None:
  """A NaFlex checkpoint (Dense patch kernel [P*P*3, D], position grid [G, G, D]) into a square
  ViT, or the reverse: WeightsError saying which option to set."""
  name = "img/embedding/kernel"
  if name not in flat or name not in want or len(want[name]) not in (2, 4):
    return
  stored_naflex, model_naflex = flat[name].ndim == 2, len(want[name]) == 2
  if stored_naflex and not model_naflex:
    raise WeightsError(f"checkpoint {path} is a NaFlex image tower (Dense patch embedding "
                       f"{flat[name].shape}) but the model's ViT takes square images: set "
                       "model.image.naflex=True (and posemb_grid to the checkpoint's position "
                       "grid side) and feed patches from the `naflex` op")
  if model_naflex and not stored_naflex:
    raise WeightsError(f"checkpoint {path} is a square-image ViT (convolutional patch embedding "
                       f"{flat[name].shape}) but model.image.naflex=True: set naflex=False and "
                       "image_size, or load a NaFlex checkpoint")
  pos = flat.get("img/pos_embedding")
  # Square ViTs' position embeddings are resampled to the resolution instead (_fit).
  if model_naflex and pos is not None and pos.shape != want["img/pos_embedding"]:
    raise WeightsError(f"checkpoint {path}: NaFlex position grid {pos.shape} vs the model's "
                       f"{want['img/pos_embedding']}: set model.image.posemb_grid="
                       f"{pos.shape[0]} (and the width to {pos.shape[-1]})")


def _fit(flat: dict[str, np.ndarray], want: dict[str, tuple[int, ...]],
         model_config: dict[str, Any]) -> dict[str, np.ndarray]:
  """Scan layout, position-embedding resolution and text length fitted to the model."""
  for prefix in _encoder_prefixes(want, scanned=True):
    flat = _stack_blocks(flat, prefix)
  for prefix in _encoder_prefixes(want, scanned=False):
    flat = _unstack_blocks(flat, prefix)
  cls = int(bool(model_config["image"].get("posemb_cls")))
  for name, num_prefix in (("img/pos_embedding", cls), ("img/attnpool/pos_embedding", 1)):
    if name in flat and name in want and flat[name].shape != want[name]:
      if flat[name].shape[-1] == want[name][-1]:
        resampled = resample_posemb(flat[name], want[name][1], num_prefix)
        flat[name] = flat[name] if resampled is None else resampled
  name = "txt/pos_embedding"
  if name in flat and name in want and flat[name].shape[1] > want[name][1]:
    flat[name] = flat[name][:, :want[name][1]]  # Positions past max_len are never used.
  return flat


HINTS = {
    "open_clip": (
        "open_clip / OpenAI CLIP weights need model.image: pool_type='tok', posemb_cls=True, "
        "ln_pre=True, patch_bias=False, head_bias=False (ViT) or type='resnet'; model.text: "
        "causal=True, pool_type='argmax', head_bias=False; and model.out_dim set"),
    "timm_siglip": (
        "open_clip's SigLIP weights need big_vision's SigLIP towers: model.image pool_type='map' "
        "(out_dim None for the image unless it has visual.head.proj), model.text "
        "pool_type='last' with a head"),
}
HF_HINT = "Build the model with weights.hf_config(path) (a directory's config.json says it all)"


def _check(flat: dict[str, np.ndarray], want: dict[str, tuple[int, ...]], keep: set[str],
           extra: Sequence[str], path: str, layout: str | None) -> None:
  """Raises WeightsError naming every missing, unexpected and mis-shaped parameter."""
  missing = sorted(n for n in want if n not in flat and n not in keep)
  unexpected = sorted([n for n in flat if n not in want] + list(extra))
  if missing or unexpected:
    lines = [f"  missing (in the model, not in the checkpoint): {n}" for n in missing]
    lines += [f"  unexpected (in the checkpoint, not in the model): {n}" for n in unexpected]
    hint = HINTS.get(layout) or (HF_HINT if layout else (
        "Set the model config to the checkpoint's architecture (variant, pool_type, scan, "
        "bias_init, ...)"))
    raise WeightsError(f"checkpoint {path} does not fit the model ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected parameters):\n{_first(lines)}\n{hint}, "
                       "or list parameters to initialise afresh in dont_load.")
  wrong = [f"  {n}: checkpoint {flat[n].shape} vs model {want[n]}" for n in sorted(flat)
           if n not in keep and tuple(flat[n].shape) != want[n]]
  if wrong:
    raise WeightsError(f"checkpoint {path}: {len(wrong)} parameter shapes differ from the "
                       f"model's:\n{_first(wrong)}\nSet the model config to the checkpoint's "
                       "sizes, or list these parameters in dont_load.")


def _first(lines: list[str], count: int = 40) -> str:
  more = [f"  ... and {len(lines) - count} more"] if len(lines) > count else []
  return "\n".join(lines[:count] + more)


def _check_vocab(flat, want, keep, tokenizer, path: str) -> None:
  name = "txt/Embed_0/embedding"
  if name not in flat or name not in want or name in keep:
    return
  stored, model = flat[name].shape[0], want[name][0]
  tok = None
  if isinstance(tokenizer, str):
    from big_vision_lite.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
    tok = (repr(tokenizer), tok_lib.get(tokenizer).vocab_size)
  elif tokenizer is not None:
    label = getattr(tokenizer, "model", None) or getattr(tokenizer, "vocab", None)
    tok = (label or type(tokenizer).__name__, tokenizer.vocab_size)
  if stored != model or (tok and tok[1] > stored):
    using = f"tokenizer {tok[0]} has {tok[1]} tokens" if tok else "no tokenizer given"
    raise WeightsError(
        f"vocabulary mismatch: checkpoint {path} embeds {stored} tokens, model.text.vocab_size is "
        f"{model} ({using}). Use the checkpoint's tokenizer and set model.text.vocab_size="
        f"{stored}, or list txt/Embed_0/embedding in dont_load to learn a new table.")


def load_params(path: str, model_config, *, init_params=None, dont_load: Sequence[str] = (),
                tokenizer=None, beside: Sequence[str] = ()) -> dict:
  """The parameters at `path` as the tree `TwoTowers(**model_config)` applies (host numpy
  float32), converted and fitted to the model. Parameters whose names fully match a `dont_load`
  regex keep `init_params`' values (and need not be in the checkpoint). `tokenizer` (a spec for
  tokenizer.get or a tokenizer) is checked against the checkpoint's vocabulary. Checkpoint
  entries under the top-level names `beside` (the parameters objectives add beside the towers,
  which the caller loads itself) are not the model's and are left out without complaint."""
  model_config = _plain(model_config)
  path = hf.resolve(path)
  if hf.is_model_dir(path):
    hf.read_config(path)  # An unsupported architecture says so before the model is built.
  want = target_shapes(model_config)
  rules = [(r, True) for r in dont_load]
  pytree.rule_tree(rules, {})  # Fails early, naming a bad regex.
  keep = {n for n in want if pytree.match_rules(rules, n, False)}
  if keep and init_params is None:
    raise WeightsError(f"dont_load matches {sorted(keep)[:3]}...: those keep init_params' "
                       "values, so pass init_params")
  flat, layout = read(path)
  flat = {k: v for k, v in flat.items() if k.split("/")[0] not in beside}
  extra: list[str] = []
  if layout:
    flat, extra = open_clip.convert(flat, *_table(layout, model_config))
  _check_naflex(flat, want, path)
  flat = _fit(flat, want, model_config)
  _check_vocab(flat, want, keep, tokenizer, path)
  _check(flat, want, keep, extra, path, layout)
  init = dict(pytree.named_leaves(jax.device_get(init_params))) if keep else {}
  tree: dict = {}
  for name in want:
    *parents, leaf = name.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = np.asarray(init[name] if name in keep else flat[name], np.float32)
  return tree


# --- Export.

def _open_clip_problems(model_config: dict[str, Any]) -> list[str]:
  """Why `model_config`'s parameters have no open_clip layout (empty if they do)."""
  problems = []
  dims = model_config.get("out_dim")
  if dims is None:
    problems.append("model.out_dim=None: open_clip's towers end in a projection")
  image, text = model_config["image"], model_config["text"]
  if image_tower_type(image) == "vit":
    wanted = dict(pool_type="tok", posemb="learn", posemb_cls=True, ln_pre=True,
                  patch_bias=False, head_bias=False)
    defaults = dict(pool_type="map", posemb="learn", posemb_cls=False, ln_pre=False,
                    patch_bias=True, head_bias=True)
    problems += [f"model.image.{k}={image.get(k, defaults[k])!r} (open_clip's ViT: {v!r})"
                 for k, v in wanted.items() if image.get(k, defaults[k]) != v]
  if text.get("pool_type", "last") not in ("argmax", "last", "first"):
    problems.append(f"model.text.pool_type={text['pool_type']!r} (open_clip's text tower pools "
                    "one token: 'argmax', 'last' or 'first')")
  if text.get("head_bias", True):
    problems.append("model.text.head_bias=True (open_clip's text projection has no bias)")
  return problems


def _export_hf(flat: dict[str, np.ndarray], model_config: dict[str, Any], path: str,
               tokenizer: str | None) -> None:
  """A transformers model directory: config.json, model.safetensors and the tokenizer's file
  (with tokenizer_config.json for a Gemma-layout sentencepiece model)."""
  import json  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  config = hf.export_config(model_config)
  for prefix in _encoder_prefixes(flat, scanned=True):
    flat = _unstack_blocks(flat, prefix)
  state = hf.export_state(flat, model_config)
  os.makedirs(path, exist_ok=True)
  tmp = os.path.join(path, f".tmp{os.getpid()}")
  save_file(state, tmp, metadata={"format": "pt"})
  os.replace(tmp, os.path.join(path, hf.SAFETENSORS))
  files, tokenizer_config = hf.tokenizer_files(tokenizer, config["architectures"][0],
                                                config["text_config"]["max_position_embeddings"])
  for name, source in files.items():
    shutil.copyfile(source, os.path.join(path, name))
  if tokenizer_config:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(tokenizer_config, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, "tokenizer_config.json"))
  with open(tmp, "w", encoding="utf-8") as f:  # Last: a directory with config.json is whole.
    json.dump(config, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(path, hf.CONFIG))


def export(params, model_config, path: str, format: str,  # pylint: disable=redefined-builtin
           tokenizer: str | None = None) -> None:
  """Writes `params` to `path`: 'npz' in big_vision's layout (flat '/'-joined names, as the
  model holds them), 'safetensors' as an open_clip CLIP state dict (float32), or 'hf' as a
  Hugging Face transformers directory (SiglipModel, Siglip2Model for NaFlex, or CLIPModel:
  config.json, model.safetensors
  and, given the run's `tokenizer` spec, its file). Each file is written whole or not at all."""
  model_config = _plain(model_config)
  flat = {n: np.asarray(x, np.float32) for n, x in pytree.named_leaves(jax.device_get(params))}
  if format not in FORMATS:
    raise WeightsError(f"unknown export format {format!r}; known: {list(FORMATS)}")
  if format == "hf":
    _export_hf(flat, model_config, path, tokenizer)
    return
  tmp = f"{path}.tmp{os.getpid()}"
  if format == "npz":
    with open(tmp, "wb") as f:
      np.savez(f, **flat)
  else:
    problems = _open_clip_problems(model_config)
    if problems:
      raise WeightsError("cannot export as safetensors (open_clip's layout): this model has\n  " +
                         "\n  ".join(problems) + "\nExport as npz (big_vision's layout) instead.")
    for prefix in _encoder_prefixes(flat, scanned=True):
      flat = _unstack_blocks(flat, prefix)
    table = _table("open_clip", model_config)
    state = open_clip.unconvert(flat, *table)
    written, _ = open_clip.convert(state, *table)
    left = sorted(set(flat) - set(written))
    if left:
      raise WeightsError(f"cannot export as safetensors: no open_clip key for {left}; export as "
                         "npz instead.")
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file(state, tmp, metadata={"format": "pt"})
  os.replace(tmp, path)
