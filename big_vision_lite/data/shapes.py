"""`shapes`: an embedded, procedurally drawn image-caption dataset (no download).

Each image shows one (2/3 of images) or two objects on a dark, noisy background. An object has a shape (8), a
colour (8), a size (small/large) and a position (3x3 grid); captions describe them in several
phrasings. Every example is a pure function of (seed, split, index), so any process can draw any
example, and the training stream is infinite. 16 colour-shape combinations never appear in
`train` (each shape twice, each colour twice), so zero-shot accuracy on them measures
compositional generalisation.
"""

import functools
import re

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "plus", "ring", "crescent", "star")
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235), "yellow": (235, 220, 50),
    "cyan": (40, 215, 225), "magenta": (215, 50, 205), "orange": (245, 140, 25),
    "white": (240, 240, 240),
}
COLOR_NAMES = tuple(COLORS)
SIZES = {"small": 0.32, "large": 0.48}  # object box side, as a fraction of the image side
SIZE_NAMES = tuple(SIZES)
POSITIONS = ("top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right")  # 3x3 grid cells, row-major
# (shape, colour) pairs never drawn in `train`.
HELDOUT_COMBOS = tuple(sorted({(s, s) for s in range(8)} | {(s, (s + 3) % 8) for s in range(8)}))
SEEN_COMBOS = tuple((s, c) for s in range(8) for c in range(8) if (s, c) not in HELDOUT_COMBOS)
ALL_COMBOS = tuple((s, c) for s in range(8) for c in range(8))
SPLITS = {"train": 0, "validation": 1, "test": 2}
P_SINGLE = 2 / 3  # fraction of one-object images when `num_objects` is not fixed

_ONE = ("a {c} {s}", "a {z} {c} {s}", "a photo of a {c} {s}", "a {c} {s} at the {p}",
        "a {z} {c} {s} at the {p}", "there is a {c} {s} at the {p}", "{c} {s}")
_TWO = ("a {c} {s} and a {c2} {s2}", "a {c} {s} {rel} a {c2} {s2}",
        "a {z} {c} {s} and a {z2} {c2} {s2}", "two shapes: a {c} {s} and a {c2} {s2}")


def with_articles(text: str) -> str:
  """'a orange ring' -> 'an orange ring'."""
  return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside-test for a shape on box coordinates u, v in [-1, 1] (v points up)."""
  r = np.hypot(u, v)
  au, av = np.abs(u), np.abs(v)
  if shape == "circle":
    return r <= 0.95
  if shape == "square":
    return np.maximum(au, av) <= 0.8
  if shape == "triangle":
    return (v >= -0.75) & (v <= 0.9 - 1.85 * au)
  if shape == "diamond":
    return au + av <= 1.0
  if shape == "plus":
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
  if shape == "ring":
    return (r <= 0.95) & (r >= 0.55)
  if shape == "crescent":
    return (r <= 0.95) & (np.hypot(u - 0.45, v - 0.2) >= 0.75)
  if shape == "star":  # five points: radius 1 at the tips, 0.4 between them
    theta = np.mod(np.arctan2(v, u) - np.pi / 2, 2 * np.pi / 5)
    tip = np.abs(theta - np.pi / 5) / (np.pi / 5)  # 0 between two tips, 1 at a tip
    return r <= 0.4 + 0.6 * tip
  raise ValueError(f"unknown shape {shape!r}")


@functools.lru_cache(maxsize=None)
def _alpha(shape: str, side: int) -> np.ndarray:
  """Anti-aliased coverage [side, side] in [0, 1], by 4x4 supersampling."""
  ss = 4
  t = (np.arange(side * ss) + 0.5) / (side * ss) * 2 - 1
  u, v = np.meshgrid(t, -t)
  m = _shape_mask(shape, u, v).astype(np.float32)
  return m.reshape(side, ss, side, ss).mean(axis=(1, 3))


@functools.lru_cache(maxsize=None)
def _noise_bank(size: int, count: int = 64) -> np.ndarray:
  """`count` fixed grey noise fields [count, size, size, 3] (std 6), shared by all examples."""
  noise = np.random.default_rng(1234).normal(0, 6, (count, size, size, 1))
  return np.repeat(noise, 3, axis=3).astype(np.float32)


def _place(rng: np.random.Generator, cell: int, side: int, size: int) -> tuple[int, int]:
  """Top-left corner of a `side`-pixel box centred (with jitter) in a 3x3 grid cell."""
  row, col = divmod(cell, 3)
  cy, cx = (row + 0.5) * size / 3, (col + 0.5) * size / 3
  jitter = size / 3 * 0.15
  y0 = int(round(cy - side / 2 + rng.uniform(-jitter, jitter)))
  x0 = int(round(cx - side / 2 + rng.uniform(-jitter, jitter)))
  return min(max(y0, 0), size - side), min(max(x0, 0), size - side)


def _relation(cell: int, cell2: int) -> str:
  (r1, c1), (r2, c2) = divmod(cell, 3), divmod(cell2, 3)
  if c1 != c2:
    return "to the left of" if c1 < c2 else "to the right of"
  return "above" if r1 < r2 else "below"


def draw(seed: int, split: str, index: int, image_size: int = 64,
         combos: tuple[tuple[int, int], ...] | None = None, num_objects: int | None = None,
         all_captions: bool = True):
  """Draws example `index` of `split`: a dict with `image` uint8 [H, W, 3], `captions` (every
  phrasing) and `caption` (one of them, the training pick).

  `combos` restricts the (shape, colour) pairs (default: unseen pairs excluded from train);
  `num_objects` fixes 1 or 2 objects (default: 1 with probability P_SINGLE, else 2);
  `all_captions=False` formats only `caption` (`captions` is then that one), for speed.
  Also returns `shape`, `color`, `size`, `position` of the first object and `regions`: every
  object's {'box': [y0, x0, y1, x1] in [0, 1] (the square it is drawn in), 'text': its region
  caption ('the small red circle')}.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown shapes split {split!r}; known: {list(SPLITS)}")
  rng = np.random.default_rng((seed, SPLITS[split], index))
  if combos is None:
    combos = SEEN_COMBOS if split == "train" else ALL_COMBOS
  n = num_objects or (1 if rng.random() < P_SINGLE else 2)
  bg = rng.integers(0, 50)
  bank = _noise_bank(image_size)
  img = np.maximum(bank[rng.integers(len(bank))] + bg, 0)  # float32 [H, W, 3]
  cells = rng.choice(9, size=n, replace=False)
  objs = []
  for k in range(n):
    shape, color = combos[rng.integers(len(combos))]
    size = int(rng.integers(2))
    side = max(4, int(round(SIZES[SIZE_NAMES[size]] * image_size)))
    y0, x0 = _place(rng, int(cells[k]), side, image_size)
    rgb = np.array(COLORS[COLOR_NAMES[color]]) + rng.normal(0, 12, 3)
    rgb = np.minimum(np.maximum(rgb, 0), 255)  # np.clip's result, without its overhead
    a = _alpha(SHAPES[shape], side)[..., None]
    patch = img[y0:y0 + side, x0:x0 + side]
    img[y0:y0 + side, x0:x0 + side] = a * rgb + (1 - a) * patch
    objs.append(dict(s=SHAPES[shape], c=COLOR_NAMES[color], z=SIZE_NAMES[size],
                     p=POSITIONS[cells[k]], shape=shape, color=color, size=size,
                     position=int(cells[k]),
                     box=[y0 / image_size, x0 / image_size, (y0 + side) / image_size,
                          (x0 + side) / image_size]))
  o = objs[0]
  if n == 1:
    templates, fields = _ONE, o
  else:
    o2 = objs[1]
    templates = _TWO
    fields = dict(o, c2=o2["c"], s2=o2["s"], z2=o2["z"], rel=_relation(o["position"], o2["position"]))
  pick = int(rng.integers(len(templates)))
  captions = [with_articles(t.format(**fields))
              for t in (templates if all_captions else templates[pick:pick + 1])]
  regions = [{"box": obj["box"], "text": region_text(obj["shape"], obj["color"], obj["size"]),
              "shape": obj["shape"], "color": obj["color"]} for obj in objs]
  return dict(image=np.round(img).astype(np.uint8), captions=captions,
              caption=captions[pick if all_captions else 0], num_objects=n,
              shape=o["shape"], color=o["color"], size=o["size"], position=o["position"],
              regions=regions)


def pixel_labels(regions: list[dict], image_size: int) -> np.ndarray:
  """int [H, W]: the colour (index into COLOR_NAMES) of the object covering each pixel (at least
  half of it, the object drawn last on top), or len(COLORS) for the background."""
  out = np.full((image_size, image_size), len(COLORS), np.int64)
  for r in regions:
    y0, x0, y1, x1 = (np.asarray(r["box"]) * image_size).round().astype(int)
    inside = _alpha(SHAPES[r["shape"]], y1 - y0) >= 0.5
    out[y0:y1, x0:x1][inside] = r["color"]
  return out


def region_text(shape: int, color: int, size: int) -> str:
  """An object's region caption: 'the small red circle'."""
  return f"the {SIZE_NAMES[size]} {COLOR_NAMES[color]} {SHAPES[shape]}"


def region_pick(seed: int, split: str, index: int, num_regions: int) -> int:
  """Which region of example `index` the training stream describes (its own random stream, so
  the image and captions are those `draw` gives)."""
  return int(np.random.default_rng((seed, SPLITS[split], index, 1)).integers(num_regions))


# Classification tasks on one-object images: the label is one attribute of the object.
TASKS = ("shapes_shape", "shapes_color", "shapes_combo_heldout", "shapes_size",
         "shapes_position")
_ATTRIBUTE = {"shapes_shape": ("shape", SHAPES), "shapes_color": ("color", COLOR_NAMES),
              "shapes_size": ("size", SIZE_NAMES), "shapes_position": ("position", POSITIONS)}


def task_classnames(task: str) -> list[str]:
  """The class names of a shapes classification task (TASKS)."""
  if task == "shapes_combo_heldout":
    return [f"{COLOR_NAMES[c]} {SHAPES[s]}" for s, c in HELDOUT_COMBOS]
  if task not in _ATTRIBUTE:
    raise ValueError(f"unknown shapes task {task!r}; known: {list(TASKS)}")
  return list(_ATTRIBUTE[task][1])


def draw_task(task: str, seed: int, split: str, index: int, image_size: int = 64):
  """Example `index` of a classification task: (one-object example as `draw` returns, label),
  with only its sampled caption formatted (a task has no use for the others). The held-out
  combos task draws only the 16 held-out colour-shape pairs (any split)."""
  if task == "shapes_combo_heldout":
    ex = draw(seed, split, index, image_size, combos=HELDOUT_COMBOS, num_objects=1,
              all_captions=False)
    return ex, HELDOUT_COMBOS.index((ex["shape"], ex["color"]))
  if task not in _ATTRIBUTE:
    raise ValueError(f"unknown shapes task {task!r}; known: {list(TASKS)}")
  combos = SEEN_COMBOS if split == "train" else ALL_COMBOS
  ex = draw(seed, split, index, image_size, combos=combos, num_objects=1, all_captions=False)
  return ex, int(ex[_ATTRIBUTE[task][0]])


def caption_corpus(seed: int = 0, num_examples: int = 20_000) -> list[str]:
  """Every caption phrasing of `num_examples` training examples (for training a tokenizer)."""
  out = []
  for i in range(num_examples):
    out.extend(draw(seed, "train", i, image_size=16)["captions"])
  return out
