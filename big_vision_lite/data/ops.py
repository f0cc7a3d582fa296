"""Preprocessing ops and the op-string parser.

  decode|resize(224)|flip_lr|value_range(-1,1)|choice(inkey='captions',outkey='text')|
  tokenize(max_len=64,inkey='text',outkey='labels')|keep('image','labels')

Geometric ops (resize, crops, flip) also move the boxes of `example['regions']` (a list of
{'box': [y0, x0, y1, x1] in [0, 1] of the image, 'text': ...}, from tar shards or shapes):
boxes are clipped to the new image and regions left with no area are dropped. `region` then
picks one region for LocCa ('region_text', 'region_box', 'region_valid').

`parse(spec)` builds every op at start (unknown op or bad argument: an error naming it) and
returns `fn(example: dict, rng: np.random.Generator) -> dict`. Each op is a factory in OPS
returning `op(example, rng) -> example`; random ops draw only from `rng`, so a pipeline given
a per-example seeded generator is deterministic (and resumable). An op that fails on an example
raises `OpError`, naming the op as written and the keys the example had at that op.
"""

import ast
import difflib
import inspect
import io
from typing import Any, Callable

import numpy as np
from PIL import Image

from big_vision_lite import errors
from big_vision_lite.data import instruct
from big_vision_lite.data import tokenizer as tok_lib

Op = Callable[[dict, np.random.Generator], dict]


class OpStringError(errors.Error, ValueError):
  """An op string that cannot be built (unknown op, bad arguments, unbalanced brackets)."""


class OpError(errors.Error):
  """An op failed on an example: which op (as written), why, and the example's keys then."""

  def __init__(self, op: str, cause: BaseException, keys: list[str]):
    self.op, self.cause, self.keys = op, cause, keys
    super().__init__(f"preprocessing op {op!r} failed with {type(cause).__name__}: {cause} "
                     f"(the example had keys {keys} at that op)")

  def __reduce__(self):  # Rebuilt from its fields when pickled (e.g. out of a worker process).
    return OpError, (self.op, self.cause, self.keys)


def _image_op(fn) -> Callable[..., Op]:
  """Wraps fn(image, rng, *args) into an op on example[key] (key='image' by default)."""
  def factory(*args, key: str = "image", **kwargs) -> Op:
    def op(example, rng):
      return {**example, key: fn(example[key], rng, *args, **kwargs)}
    return op
  factory.__signature__ = inspect.signature(fn).replace(parameters=[
      *list(inspect.signature(fn).parameters.values())[2:],
      inspect.Parameter("key", inspect.Parameter.KEYWORD_ONLY, default="image")])
  factory.__doc__ = fn.__doc__
  return factory


def _geometric_op(fn) -> Callable[..., Op]:
  """Wraps fn(image, rng, *args) -> (image, window or None) into an op on example[key] that also
  moves example['regions'] boxes: `window` (top, left, height, width, flipped) is where the new
  image lies in the old one, as fractions of the old image's side."""
  def factory(*args, key: str = "image", **kwargs) -> Op:
    def op(example, rng):
      image, window = fn(example[key], rng, *args, **kwargs)
      out = {**example, key: image}
      if window is not None and key == "image" and "regions" in example:
        out["regions"] = move_regions(example["regions"], *window)
      return out
    return op
  factory.__signature__ = inspect.signature(fn).replace(parameters=[
      *list(inspect.signature(fn).parameters.values())[2:],
      inspect.Parameter("key", inspect.Parameter.KEYWORD_ONLY, default="image")])
  factory.__doc__ = fn.__doc__
  return factory


def move_regions(regions: list[dict], top: float, left: float, height: float, width: float,
                 flipped: bool = False) -> list[dict]:
  """Regions' boxes in the window (top, left, height, width) of the image (fractions), mirrored
  left-right if `flipped`, clipped to [0, 1]; regions with no area left are dropped."""
  out = []
  for r in regions:
    y0, x0, y1, x1 = r["box"]
    y0, y1 = ((np.clip([y0, y1], top, top + height) - top) / height).tolist()
    x0, x1 = ((np.clip([x0, x1], left, left + width) - left) / width).tolist()
    if flipped:
      x0, x1 = 1 - x1, 1 - x0
    if y1 > y0 and x1 > x0:
      out.append({**r, "box": [y0, x0, y1, x1]})
  return out


def _decode(data, rng, channels: int = 3) -> np.ndarray:
  """Encoded bytes (JPEG, PNG, WebP, ...) -> uint8 [H, W, channels]; arrays pass through."""
  del rng
  if isinstance(data, np.ndarray):
    return data
  with Image.open(io.BytesIO(data)) as img:
    img.draft("RGB", (img.width, img.height))  # Lets JPEG skip work it does not need.
    return np.asarray(img.convert("RGB" if channels == 3 else "L")).reshape(
        img.height, img.width, channels)


def _resize(image, rng, size, method: str = "bilinear") -> np.ndarray:
  """Resizes to `size` (int: square, or (height, width)), antialiased."""
  del rng
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return _pil_resize(image, h, w, method)


def _pil_resize(image: np.ndarray, h: int, w: int, method: str = "bilinear") -> np.ndarray:
  methods = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
  if method not in methods:
    raise ValueError(f"resize method {method!r} not in {sorted(methods)}")
  if image.shape[:2] == (h, w):
    return image
  pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
  return np.asarray(pil.resize((w, h), methods[method])).reshape(h, w, image.shape[-1])


def _resize_small(image, rng, size: int, method: str = "bilinear") -> np.ndarray:
  """Resizes so that the shorter side is `size`, keeping the aspect ratio."""
  del rng
  h, w = image.shape[:2]
  scale = size / min(h, w)
  return _pil_resize(image, max(size, round(h * scale)), max(size, round(w * scale)), method)


def _central_crop(image, rng, size) -> np.ndarray:
  """The central `size` crop (int: square, or (height, width))."""
  del rng
  ch, cw = (size, size) if isinstance(size, int) else tuple(size)
  h, w = image.shape[:2]
  if ch > h or cw > w:
    raise ValueError(f"central_crop({size}) is larger than the {h}x{w} image; resize first")
  top, left = (h - ch) // 2, (w - cw) // 2
  return image[top:top + ch, left:left + cw], (top / h, left / w, ch / h, cw / w)


def _inception_crop(image, rng, size=None, area_min: float = 5, area_max: float = 100,
                    ratio_min: float = 3 / 4, ratio_max: float = 4 / 3) -> np.ndarray:
  """Random crop covering area_min..area_max % of the image with aspect ratio in
  [ratio_min, ratio_max] (log-uniform), then resized to `size` if given (Inception-style)."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(area_min, area_max) / 100
    ratio = np.exp(rng.uniform(np.log(ratio_min), np.log(ratio_max)))
    ch, cw = int(round(np.sqrt(area / ratio))), int(round(np.sqrt(area * ratio)))
    if 0 < ch <= h and 0 < cw <= w:
      break
  else:  # Fall back to the largest centred crop with a valid aspect ratio.
    ch, cw = h, min(w, int(round(h * ratio_max)))
  top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
  crop = image[top:top + ch, left:left + cw]
  window = (top / h, left / w, ch / h, cw / w)
  if size is None:
    return crop, window
  sh, sw = (size, size) if isinstance(size, int) else tuple(size)
  return _pil_resize(crop, sh, sw), window


def naflex_size(height: int, width: int, patch_size: int, max_len: int) -> tuple[int, int]:
  """(H, W), multiples of `patch_size`, for resizing a height x width image to at most `max_len`
  patches with its aspect ratio distorted as little as rounding allows: the largest scale r whose
  (ceil(height * r / p) * p, ceil(width * r / p) * p) fits, found by big_vision's bisection
  (`resize_to_sequence`: r in (1e-6, 100), to 1e-5)."""
  if max_len < 1:
    raise ValueError(f"naflex max_len={max_len} must be at least 1 patch")

  def target(ratio: float) -> tuple[int, int]:
    return tuple(max(patch_size, int(patch_size * np.ceil(np.float32(side) * np.float32(ratio)
                                                          / patch_size)))
                 for side in (height, width))

  lo, hi = 1e-6, 100.0
  while hi - lo >= 1e-5:
    mid = (lo + hi) / 2
    h, w = target(mid)
    if (h // patch_size) * (w // patch_size) <= max_len:
      lo = mid
    else:
      hi = mid
  return target(lo)


def patchify(image: np.ndarray, patch_size: int, max_len: int) -> dict[str, np.ndarray]:
  """An image [H, W, C] (H, W multiples of `patch_size`) -> the NaFlex input of one example
  (models/vit.py): `patches` float32 [max_len, P*P*C] in (row, column, channel) order, `yidx`,
  `xidx` int32 [max_len], `mask` bool [max_len]; padding is zeros with mask False."""
  h, w, c = image.shape
  rows, cols, p = h // patch_size, w // patch_size, patch_size
  if rows * p != h or cols * p != w:
    raise ValueError(f"patchify needs H, W multiples of the patch size {p}, got {h}x{w}: "
                     "resize first (the naflex op does)")
  n = rows * cols
  if n > max_len:
    raise ValueError(f"a {h}x{w} image is {n} patches of {p}, more than max_len={max_len}")
  out = {"patches": np.zeros((max_len, p * p * c), np.float32),
         "yidx": np.zeros((max_len,), np.int32), "xidx": np.zeros((max_len,), np.int32),
         "mask": np.zeros((max_len,), bool)}
  out["patches"][:n] = image.reshape(rows, p, cols, p, c).transpose(0, 2, 1, 3, 4).reshape(n, -1)
  out["yidx"][:n], out["xidx"][:n] = np.divmod(np.arange(n, dtype=np.int32), cols)
  out["mask"][:n] = True
  return out


def naflex_image(image: np.ndarray, patch_size: int, max_len: int,
                 method: str = "bilinear") -> dict[str, np.ndarray]:
  """SigLIP 2's NaFlex preprocessing: resize (antialiased) to naflex_size, patchify, pad to
  `max_len` patches. uint8 images are resized through PIL as `resize` does, float images one
  channel at a time; values are kept (apply value_range before or after, as for square images)."""
  h, w = naflex_size(image.shape[0], image.shape[1], patch_size, max_len)
  if image.dtype == np.uint8:
    image = _pil_resize(image, h, w, method)
  elif image.shape[:2] != (h, w):
    image = np.stack([_pil_resize_float(image[..., k], h, w, method)
                      for k in range(image.shape[-1])], axis=-1)
  return patchify(image.astype(np.float32), patch_size, max_len)


def _pil_resize_float(channel: np.ndarray, h: int, w: int, method: str) -> np.ndarray:
  methods = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
  if method not in methods:
    raise ValueError(f"resize method {method!r} not in {sorted(methods)}")
  pil = Image.fromarray(channel.astype(np.float32), mode="F")
  return np.asarray(pil.resize((w, h), methods[method]))


def _naflex(image, rng, patch_size: int, max_len: int, method: str = "bilinear") -> dict:
  """NaFlex (SigLIP 2): resizes keeping the aspect ratio as closely as multiples of
  `patch_size` allow to at most `max_len` patches, then patchifies and pads to `max_len`: the
  image becomes the dict the NaFlex ViT takes (patches, yidx, xidx, mask)."""
  del rng
  return naflex_image(image, patch_size, max_len, method)


def _flip_lr(image, rng) -> np.ndarray:
  """Mirrors left-right with probability 1/2."""
  flip = rng.random() < 0.5
  return (image[:, ::-1] if flip else image), (0., 0., 1., 1., flip)


def value_range(image: np.ndarray, vmin: float = -1, vmax: float = 1) -> np.ndarray:
  """uint8 [0, 255] -> float32 [vmin, vmax] (the training stream and evaluators use it too)."""
  return image.astype(np.float32) * ((vmax - vmin) / 255.) + vmin


def _value_range(image, rng, vmin: float = -1, vmax: float = 1) -> np.ndarray:
  """uint8 [0, 255] -> float32 [vmin, vmax]."""
  del rng
  return value_range(image, vmin, vmax)


# The per-channel mean and standard deviation (of [0, 1] pixels) OpenAI's CLIP was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _normalize(image, rng, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
  """uint8 [0, 255] -> float32 (x / 255 - mean) / std per channel (default: CLIP's)."""
  del rng
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return (image.astype(np.float32) / 255. - mean) / std


def choice(inkey: str = "captions", outkey: str | None = None) -> Op:
  """Picks one element of the list example[inkey] uniformly at random."""
  def op(example, rng):
    items = example[inkey]
    if len(items) == 0:
      raise ValueError(f"choice: {inkey!r} is empty")
    return {**example, outkey or inkey: items[int(rng.integers(len(items)))]}
  return op


def tokenize(max_len: int, inkey: str = "text", outkey: str = "labels",
             model: str = tok_lib.SHAPES_MODEL) -> Op:
  """Text -> int32 [max_len] ids, 0-padded, with the tokenizer `model` names: a sentencepiece
  .model (lower-cased, EOS), 'clip' or a CLIP vocabulary (start/end of text); see tokenizer.get.
  In a training pipeline `max_len` and `model` default to the model's text length and the
  config's input.tokenizer (see parse's `defaults`)."""
  tok = tok_lib.get(model)

  def op(example, rng):
    del rng
    text = example[inkey]
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    return {**example, outkey: tok.encode([text], max_len)[0]}
  return op


def region(inkey: str = "regions", text_key: str = "region_text", box_key: str = "region_box",
           valid_key: str = "region_valid") -> Op:
  """Picks one of example[inkey] (regions) uniformly at random: its text (str), box (float32
  [4]) and valid = 1.0; an example without regions (none given, or all cropped away) gets '',
  zeros and valid = 0.0 (LocCa then trains its captioning only)."""
  def op(example, rng):
    regions = example.get(inkey) or []
    if not regions:
      return {**example, text_key: "", box_key: np.zeros(4, np.float32),
              valid_key: np.float32(0)}
    r = regions[int(rng.integers(len(regions)))]
    return {**example, text_key: r["text"], box_key: np.asarray(r["box"], np.float32),
            valid_key: np.float32(1)}
  return op


def conversation(length: int, inkey: str = "conversations",
                 model: str = tok_lib.SHAPES_MODEL) -> Op:
  """A sample's conversation ([(question, answer)], from a tar sample's .json `conversations`)
  -> `vlm_text` int32 [length] and `vlm_mask` float32 [length] for objectives.vlm
  (data/instruct.encode: a longer conversation or an empty answer fails the record, and is
  skipped and counted). `length` is objectives.vlm.text_len; `model` the config's tokenizer."""
  tok = tok_lib.get(model)

  def op(example, rng):
    del rng
    text, mask = instruct.encode(tok, [tuple(t) for t in example[inkey]], length)
    return {**example, "vlm_text": text, "vlm_mask": mask}
  return op


def keep(*keys: str) -> Op:
  """Keeps only `keys`."""
  def op(example, rng):
    del rng
    missing = [k for k in keys if k not in example]
    if missing:
      raise KeyError(f"keep: {missing} not in the example (has {sorted(example)})")
    return {k: example[k] for k in keys}
  return op


def rename(**names: str) -> Op:
  """rename(new='old', ...): renames keys."""
  def op(example, rng):
    del rng
    out = {k: v for k, v in example.items() if k not in names.values()}
    out.update({new: example[old] for new, old in names.items()})
    return out
  return op


OPS: dict[str, Callable[..., Op]] = {
    "decode": _image_op(_decode),
    "resize": _image_op(_resize),
    "resize_small": _image_op(_resize_small),
    "central_crop": _geometric_op(_central_crop),
    "inception_crop": _geometric_op(_inception_crop),
    "flip_lr": _geometric_op(_flip_lr),
    "value_range": _image_op(_value_range),
    "normalize": _image_op(_normalize),
    "naflex": _image_op(_naflex),
    "choice": choice,
    "tokenize": tokenize,
    "region": region,
    "conversation": conversation,
    "keep": keep,
    "rename": rename,
}


def split_ops(spec: str) -> list[str]:
  """Splits on '|' outside quotes and brackets."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(spec):
    if quote:
      if ch == quote and spec[i - 1] != "\\":
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "|" and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  if quote or depth:
    raise OpStringError(f"unbalanced quotes or brackets in preprocessing string {spec!r}: close "
                        "every '(', '[', '{' and quote")
  parts.append(spec[start:])
  return [p.strip() for p in parts if p.strip()]


def _parse_call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
  try:
    node = ast.parse(text, mode="eval").body
  except SyntaxError as e:
    raise OpStringError(f"cannot parse preprocessing op {text!r}: {e.msg}") from None
  if isinstance(node, ast.Name):
    return node.id, [], {}
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
    raise OpStringError(f"preprocessing op {text!r} should look like name or name(args)")
  try:
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
  except ValueError:
    raise OpStringError(f"arguments of {text!r} must be literals (numbers, strings, tuples)"
                        ) from None
  return node.func.id, args, kwargs


def parse(spec: str, **defaults: Any) -> Op:
  """Builds the pipeline `fn(example, rng) -> example` from an op string; a failing op raises
  OpError (its cause chained). `defaults` fill the arguments an op takes but the string leaves
  out (the trainer passes `max_len` and the tokenizer `model`, so `tokenize` alone follows the
  config)."""
  ops = []
  texts = split_ops(spec)
  for text in texts:
    name, args, kwargs = _parse_call(text)
    if name not in OPS:
      close = difflib.get_close_matches(name, OPS, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise OpStringError(f"unknown preprocessing op {name!r} in {text!r}{hint}; known ops: "
                          f"{sorted(OPS)}")
    factory = OPS[name]
    signature = inspect.signature(factory)
    try:
      given = signature.bind_partial(*args, **kwargs).arguments
      kwargs.update({k: v for k, v in defaults.items()
                     if v is not None and k in signature.parameters and k not in given})
    except TypeError:
      pass  # Reported below, without the defaults.
    try:
      signature.bind(*args, **kwargs)
      ops.append(factory(*args, **kwargs))
    except TypeError as e:
      raise OpStringError(f"bad arguments for preprocessing op {text!r}: {e}; "
                          f"signature: {name}{inspect.signature(factory)}") from None

  def pipeline(example: dict, rng: np.random.Generator) -> dict:
    # One try around the loop costs nothing until an op raises (zero-cost exceptions); then
    # `text` is the failing op and `example` the input it failed on.
    try:
      for text, op in zip(texts, ops):
        example = op(example, rng)
    except Exception as e:  # pylint: disable=broad-except
      raise OpError(text, e, sorted(map(str, example)) if isinstance(example, dict) else []) from e
    return example

  return pipeline
