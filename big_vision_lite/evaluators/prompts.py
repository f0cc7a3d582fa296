"""Class names and prompt templates for zero-shot classification.

`assets/clip_prompts.json` holds the prompt sets published with CLIP (Radford et al., 2021;
the 80 ImageNet templates and the per-dataset sets, as distributed by CLIP_benchmark, MIT
licence) keyed by tfds dataset name, and CLIP's edited ImageNet class names. Templates use `{}`
for the class name; an entry that is a string names the dataset whose entry it shares.
"""

import functools
import json
import os
import re
import string

from big_vision_lite.data import shapes

# Each shapes task averages its classifier over templates that vary the *other* attributes,
# so a colour classifier is "a red {every shape}" rather than a bare colour word. Size and
# position are only ever said next to a colour and a shape ("a large red circle at the top
# left"), so their templates name every colour-shape pair.
_PAIRS = tuple(f"{c} {s}" for s in shapes.SHAPES for c in shapes.COLOR_NAMES)
SHAPES_TEMPLATES = {
    "shapes_shape": ("a {}", "a photo of a {}") + tuple(f"a {c} {{}}" for c in shapes.COLOR_NAMES),
    "shapes_color": tuple(f"a {{}} {s}" for s in shapes.SHAPES),
    "shapes_combo_heldout": ("a {}", "a photo of a {}", "a small {}", "a large {}"),
    "shapes_size": tuple(f"a {{}} {p}" for p in _PAIRS),
    "shapes_position": tuple(f"a {p} at the {{}}" for p in _PAIRS),
}
SINGLE_TEMPLATE = ("a photo of a {}.",)
_ASSET = os.path.join(os.path.dirname(__file__), "assets", "clip_prompts.json")


@functools.cache
def _clip() -> dict:
  with open(_ASSET) as f:
    return json.load(f)


def _clip_entry(table: str, dataset: str, fix: str) -> list[str]:
  """An entry of the CLIP asset's `table`; an entry that is a string names another dataset."""
  known = _clip()[table]
  if dataset not in known:
    raise ValueError(f"no CLIP {table} for {dataset!r}; known: {sorted(known)}. {fix}")
  entry = known[dataset]
  return list(known[entry] if isinstance(entry, str) else entry)


def clip_templates(dataset: str) -> tuple[str, ...]:
  """CLIP's prompt templates for a tfds dataset name (e.g. the 80 for imagenet2012)."""
  return tuple(_clip_entry("templates", dataset, "Pass templates='single' or a tuple of strings "
                           "with one '{}' each"))


def clip_classnames(dataset: str) -> list[str]:
  """CLIP's edited class names for a tfds dataset (the ImageNet family)."""
  return _clip_entry("classnames", dataset, "Use classnames=None (the dataset's own) or a list")


def templates_for(dataset: str, spec) -> tuple[str, ...]:
  """`spec`: 'clip' (the dataset's CLIP set; the shapes sets for shapes tasks), 'single'
  ('a photo of a {}.'), or a sequence of templates with one '{}' each."""
  if spec == "clip":
    return SHAPES_TEMPLATES[dataset] if dataset in SHAPES_TEMPLATES else clip_templates(dataset)
  if spec == "single":
    return SINGLE_TEMPLATE
  if isinstance(spec, str) or not all(isinstance(t, str) and t.count("{}") == 1 for t in spec):
    raise ValueError(f"templates={spec!r}: use 'clip', 'single', or a sequence of strings with "
                     "one '{}' each")
  return tuple(spec)


def canonicalize(text: str) -> str:
  """Lower-case, delete ASCII punctuation, collapse runs of whitespace to one space, strip."""
  text = text.lower().translate(str.maketrans("", "", string.punctuation))
  return re.sub(r"\s+", " ", text).strip()


def render(templates: tuple[str, ...], classnames: list[str], postprocess=lambda s: s) -> list[str]:
  """All prompts, class-major: [c0 t0, c0 t1, ..., c1 t0, ...]."""
  return [postprocess(t.format(c)) for c in classnames for t in templates]
