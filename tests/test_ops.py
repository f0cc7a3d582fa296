"""Preprocessing ops against references, and the op-string parser's errors."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from big_vision_lite import errors
from big_vision_lite.data import ops, shapes, tokenizer

RNG = lambda seed=0: np.random.default_rng(seed)  # noqa: E731


def _image(h=30, w=40, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _run(spec, example, seed=0):
  return ops.parse(spec)(example, RNG(seed))


def test_decode_png_exact_and_jpeg_close():
  img = _image()
  png, jpg = io.BytesIO(), io.BytesIO()
  Image.fromarray(img).save(png, "PNG")
  smooth = shapes.draw(0, "test", 0, image_size=48)["image"]  # JPEG suits drawn images, not noise
  Image.fromarray(smooth).save(jpg, "JPEG", quality=95)
  np.testing.assert_array_equal(_run("decode", {"image": png.getvalue()})["image"], img)
  out = _run("decode", {"image": jpg.getvalue()})["image"]
  assert out.shape == smooth.shape and np.mean(np.abs(out.astype(int) - smooth)) < 3
  gray = io.BytesIO()
  Image.fromarray(img[..., 0]).save(gray, "PNG")
  assert _run("decode", {"image": gray.getvalue()})["image"].shape == (30, 40, 3)


def test_resize_matches_pil_and_resize_small_keeps_aspect():
  img = _image()
  ref = np.asarray(Image.fromarray(img).resize((20, 10), Image.BILINEAR))
  np.testing.assert_array_equal(_run("resize((10, 20))", {"image": img})["image"], ref)
  assert _run("resize(16)", {"image": img})["image"].shape == (16, 16, 3)
  assert _run("resize_small(15)", {"image": img})["image"].shape == (15, 20, 3)


def test_central_crop_is_the_centre():
  img = _image()
  np.testing.assert_array_equal(_run("central_crop(10)", {"image": img})["image"],
                                img[10:20, 15:25])
  with pytest.raises(ops.OpError, match="larger than the 30x40 image") as e:
    _run("central_crop(50)", {"image": img})
  assert isinstance(e.value.cause, ValueError)


def test_inception_crop_is_a_resized_window_within_bounds():
  img = np.arange(100 * 100, dtype=np.int64).reshape(100, 100)
  img3 = np.stack([img % 256] * 3, -1).astype(np.uint8)
  for seed in range(20):
    out = _run("inception_crop(area_min=20, area_max=60)", {"image": img3}, seed)["image"]
    area = out.shape[0] * out.shape[1] / 100 ** 2
    assert 0.18 <= area <= 0.62 and 3 / 4 - 0.05 <= out.shape[1] / out.shape[0] <= 4 / 3 + 0.05
  assert _run("inception_crop(24)", {"image": img3})["image"].shape == (24, 24, 3)


def test_flip_lr_is_random_and_deterministic_per_rng():
  img = _image()
  outs = [_run("flip_lr", {"image": img}, s)["image"] for s in range(16)]
  flipped = [np.array_equal(o, img[:, ::-1]) for o in outs]
  assert all(f or np.array_equal(o, img) for f, o in zip(flipped, outs))
  assert 0 < sum(flipped) < 16
  np.testing.assert_array_equal(_run("flip_lr", {"image": img}, 3)["image"], outs[3])


def test_value_range():
  out = _run("value_range(-1, 1)", {"image": np.array([[[0, 255, 51]]], np.uint8)})["image"]
  np.testing.assert_allclose(out, [[[-1, 1, -0.6]]], rtol=1e-6)
  assert out.dtype == np.float32


def test_choice_tokenize_keep_rename():
  ex = {"image": 1, "captions": ["a red circle", "a blue square"], "extra": 0}
  picks = {_run("choice(inkey='captions', outkey='text')", ex, s)["text"] for s in range(20)}
  assert picks == set(ex["captions"])
  out = _run("choice(inkey='captions', outkey='text')|tokenize(max_len=8)|keep('image', 'labels')",
             ex)
  assert set(out) == {"image", "labels"}
  np.testing.assert_array_equal(out["labels"],
                                tokenizer.get().encode([_run("choice(inkey='captions', "
                                                             "outkey='text')", ex)["text"]], 8)[0])
  assert set(_run("rename(img='image')", ex)) == {"img", "captions", "extra"}


def test_pipe_inside_strings_and_errors():
  assert ops.split_ops("a|b(x='1|2')|c") == ["a", "b(x='1|2')", "c"]
  with pytest.raises(ValueError, match=r"unknown preprocessing op 'decod'.*known ops: \['central_crop'"):
    ops.parse("decod|resize(2)")
  with pytest.raises(ValueError, match=r"bad arguments for preprocessing op 'resize\(sz=2\)'.*"
                                       r"signature: resize\(size"):
    ops.parse("resize(sz=2)")
  with pytest.raises(ValueError, match="unbalanced"):
    ops.parse("resize(2")
  with pytest.raises(ops.OpError, match=r"keep: \['labels'\] not in the example"):
    _run("keep('labels')", {"image": 0})


def test_a_failing_op_is_named_as_written_with_the_keys_it_saw():
  png = io.BytesIO()
  Image.fromarray(_image()).save(png, "PNG")
  example = {"image": png.getvalue(), "captions": ["a red circle"]}
  pipeline = ops.parse("decode|resize(8)|tokenize(max_len=12)|keep('image', 'labels')")
  with pytest.raises(ops.OpError) as e:
    pipeline(example, RNG())  # tokenize reads 'text' (its default inkey), which is not there
  err = e.value
  assert err.op == "tokenize(max_len=12)" and err.keys == ["captions", "image"]
  assert isinstance(err.cause, KeyError) and err.__cause__ is err.cause
  assert isinstance(err, errors.Error)
  assert "'tokenize(max_len=12)' failed with KeyError: 'text'" in str(err)
  assert "keys ['captions', 'image']" in str(err)
  again = pickle.loads(pickle.dumps(err))  # Crosses process boundaries intact.
  assert (again.op, again.keys, str(again)) == (err.op, err.keys, str(err))


@pytest.mark.parametrize("hw,max_len", [((30, 70), 20), ((64, 64), 16), ((90, 20), 12),
                                        ((5, 200), 9)])
def test_naflex_size_is_the_largest_scale_that_fits_and_keeps_the_aspect_ratio(hw, max_len):
  """big_vision's resize_to_sequence: sides ceil(side * r / p) * p for the largest feasible r."""
  p = 8
  h, w = ops.naflex_size(*hw, p, max_len)
  assert h % p == 0 and w % p == 0 and (h // p) * (w // p) <= max_len
  ratio = max(h / hw[0], w / hw[1])
  grow = [max(p, int(np.ceil(s * ratio * 1.001 / p)) * p) for s in hw]  # any larger scale
  assert (grow[0] // p) * (grow[1] // p) > max_len or grow == [h, w]
  if hw[0] == hw[1]:
    assert h == w == p * int(np.sqrt(max_len))


def test_naflex_op_patchifies_row_column_channel_and_pads():
  image = np.random.default_rng(0).integers(0, 256, (30, 70, 3), dtype=np.uint8)
  out = ops.parse("naflex(patch_size=8, max_len=40)")({"image": image}, None)["image"]
  h, w = ops.naflex_size(30, 70, 8, 40)
  resized = ops.parse(f"resize(({h}, {w}))")({"image": image}, None)["image"]
  n = (h // 8) * (w // 8)
  assert out["patches"].shape == (40, 192) and out["mask"].sum() == n and not out["mask"][n:].any()
  for k in range(n):  # Each patch is its image block, flattened (row, column, channel).
    y, x = out["yidx"][k], out["xidx"][k]
    np.testing.assert_array_equal(out["patches"][k],
                                  resized[8 * y:8 * y + 8, 8 * x:8 * x + 8].reshape(-1))
  assert (out["yidx"][n - 1], out["xidx"][n - 1]) == (h // 8 - 1, w // 8 - 1)
  assert not out["patches"][n:].any()
  floats = ops.parse("value_range(-1, 1)|naflex(8, 40)")({"image": image}, None)["image"]
  np.testing.assert_allclose(floats["patches"][:n], ops.value_range(out["patches"][:n]), atol=0.02)


def _box_of_mask(mask: np.ndarray) -> list[float]:
  """The box [y0, x0, y1, x1] (fractions of the image) of a mask's True pixels."""
  ys, xs = np.nonzero(mask)
  h, w = mask.shape
  return [ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w]


@pytest.mark.parametrize("spec", ["central_crop(24)", "flip_lr", "inception_crop(area_min=40)",
                                  "resize((20, 30))|flip_lr|central_crop((16, 20))",
                                  "resize_small(36)"])
def test_geometric_ops_move_region_boxes_with_the_pixels(spec):
  """A box drawn as a mask moves with the image: its pixels' bounding box after the ops is the
  transformed region box (one pixel of slack where resizing blurs the edge)."""
  img = np.zeros((30, 40, 3), np.uint8)
  img[6:18, 10:33] = 255
  regions = [{"box": [6 / 30, 10 / 40, 18 / 30, 33 / 40], "text": "a"},
             {"box": [0, 0, 2 / 30, 2 / 40], "text": "corner"}]  # Cropped away by central_crop.
  for seed in range(4):
    out = _run(spec, {"image": img, "regions": regions}, seed)
    box = next(r["box"] for r in out["regions"] if r["text"] == "a")
    h, w = out["image"].shape[:2]
    np.testing.assert_allclose(box, _box_of_mask(out["image"][..., 0] > 127),
                               atol=1.01 / min(h, w))
    if spec.startswith("central_crop"):
      assert [r["text"] for r in out["regions"]] == ["a"]


def test_region_picks_one_region_or_marks_none():
  ex = _run("region", {"regions": [{"box": [0.1, 0.2, 0.3, 0.4], "text": "x"}]})
  assert ex["region_text"] == "x" and ex["region_valid"] == 1
  np.testing.assert_allclose(ex["region_box"], [0.1, 0.2, 0.3, 0.4])
  ex = _run("region", {"image": 0})
  assert ex["region_text"] == "" and ex["region_valid"] == 0 and ex["region_box"].shape == (4,)
