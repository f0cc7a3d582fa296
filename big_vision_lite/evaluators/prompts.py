"""Class names and prompt templates for zero-shot tasks."""

from big_vision_lite.data import shapes

# Each shapes task averages its classifier over templates that vary the *other* attributes,
# so a colour classifier is "a red {every shape}" rather than a bare colour word.
SHAPES_TEMPLATES = {
    "shapes_shape": ("a {}", "a photo of a {}") + tuple(f"a {c} {{}}" for c in shapes.COLOR_NAMES),
    "shapes_color": tuple(f"a {{}} {s}" for s in shapes.SHAPES),
    "shapes_combo_heldout": ("a {}", "a photo of a {}", "a small {}", "a large {}"),
}


def render(templates: tuple[str, ...], classnames: list[str], postprocess=lambda s: s) -> list[str]:
  """All prompts, class-major: [c0 t0, c0 t1, ..., c1 t0, ...]."""
  return [postprocess(t.format(c)) for c in classnames for t in templates]
