"""The embedded shapes dataset: determinism, splits, held-out combinations, captions."""

import numpy as np
import pytest

from big_vision_lite.data import shapes


def test_deterministic_and_split_dependent():
  a, b = shapes.draw(0, "train", 5), shapes.draw(0, "train", 5)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert a["captions"] == b["captions"]
  assert not np.array_equal(a["image"], shapes.draw(0, "test", 5)["image"])
  assert not np.array_equal(a["image"], shapes.draw(1, "train", 5)["image"])


def test_image_format_and_size():
  ex = shapes.draw(0, "validation", 0, image_size=48)
  assert ex["image"].shape == (48, 48, 3) and ex["image"].dtype == np.uint8


def test_heldout_combos_never_in_train_and_cover_all_attributes():
  assert len(shapes.HELDOUT_COMBOS) == 16
  assert {s for s, _ in shapes.HELDOUT_COMBOS} == set(range(len(shapes.SHAPES)))
  assert {c for _, c in shapes.HELDOUT_COMBOS} == set(range(len(shapes.COLORS)))
  heldout_phrases = {f"{shapes.COLOR_NAMES[c]} {shapes.SHAPES[s]}" for s, c in shapes.HELDOUT_COMBOS}
  for i in range(400):
    ex = shapes.draw(0, "train", i)
    assert (ex["shape"], ex["color"]) not in shapes.HELDOUT_COMBOS
    assert not any(p in c for p in heldout_phrases for c in ex["captions"]), ex["captions"]


def test_captions_describe_the_objects():
  for i in range(50):
    ex = shapes.draw(3, "train", i, num_objects=1)
    shape, color = shapes.SHAPES[ex["shape"]], shapes.COLOR_NAMES[ex["color"]]
    assert all(shape in c and color in c for c in ex["captions"])
    assert ex["caption"] in ex["captions"]
    assert any(shapes.POSITIONS[ex["position"]] in c for c in ex["captions"])


def test_object_pixels_have_the_named_colour():
  ex = shapes.draw(0, "test", 1, image_size=64, num_objects=1)
  rgb = np.array(shapes.COLORS[shapes.COLOR_NAMES[ex["color"]]])
  img = ex["image"].reshape(-1, 3).astype(float)
  dist = np.linalg.norm(img - rgb, axis=1)
  assert np.sum(dist < 40) > 30  # A solid patch of the object's colour.


def test_two_object_relations_and_articles():
  seen = set()
  for i in range(200):
    ex = shapes.draw(0, "train", i, num_objects=2)
    seen.update(r for r in ("to the left of", "to the right of", "above", "below")
                if any(r in c for c in ex["captions"]))
    assert not any(" a orange" in c or c.startswith("a orange") for c in ex["captions"])
  assert seen == {"to the left of", "to the right of", "above", "below"}


def test_bad_split():
  with pytest.raises(ValueError, match="unknown shapes split 'dev'"):
    shapes.draw(0, "dev", 0)


def test_non_square_canvases_span_the_aspect_range_and_square_is_unchanged():
  ratios = []
  for i in range(40):
    ex = shapes.draw(0, "train", i, 48, aspect=2.0)
    h, w, _ = ex["image"].shape
    ratios.append(w / h)
    assert abs(h * w / 48 ** 2 - 1) < 0.05 and 0.49 < w / h < 2.05
  assert min(ratios) < 0.7 and max(ratios) > 1.4
  square = shapes.draw(0, "train", 3, 48)
  np.testing.assert_array_equal(shapes.draw(0, "train", 3, 48, aspect=1.0)["image"],
                                square["image"])
  with pytest.raises(ValueError, match="aspect=0.5 must be >= 1"):
    shapes.draw(0, "train", 3, 48, aspect=0.5)


def test_regions_box_each_object_and_name_it():
  for i in range(30):
    ex = shapes.draw(0, "train", i, image_size=48)
    assert len(ex["regions"]) == ex["num_objects"]
    first = ex["regions"][0]
    assert first["text"] == shapes.region_text(ex["shape"], ex["color"], ex["size"])
    y0, x0, y1, x1 = (np.asarray(first["box"]) * 48).round().astype(int)
    side = round(shapes.SIZES[shapes.SIZE_NAMES[ex["size"]]] * 48)
    assert y1 - y0 == x1 - x0 == side
    # The object's colour fills the box's centre, not the background outside it.
    colour = np.asarray(shapes.COLORS[shapes.COLOR_NAMES[ex["color"]]], float)
    centre = ex["image"][(y0 + y1) // 2, (x0 + x1) // 2].astype(float)
    if ex["shape"] not in (5, 6):  # The ring and crescent are empty at the centre.
      assert np.abs(centre - colour).max() < 60, (i, centre, colour)
