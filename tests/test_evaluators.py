"""Evaluator metrics on constructed embeddings with known answers, the shapes tasks, the
streaming linear probe, and gathering over processes."""

import inspect
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_lite import evaluators, sharding
from big_vision_lite.config import ConfigError
from big_vision_lite.data import shapes
from big_vision_lite.evaluators import (data, fewshot, linear_probe, prompts, ranking, retrieval,
                                        ridge, zeroshot)
from tests.conftest import free_port, process_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_zeroshot_perfect_and_shuffled():
  rng = np.random.default_rng(0)
  classes = np.linalg.qr(rng.normal(size=(16, 10)))[0].T  # 10 orthonormal class directions
  labels = rng.integers(0, 10, 500)
  images = classes[labels] + 0.05 * rng.normal(size=(500, 16))
  m = ranking.accuracy_metrics(images @ classes.T, labels)
  assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class_recall"] == 1.0
  m = ranking.accuracy_metrics(images @ classes.T, rng.permutation(labels))
  assert 0.03 < m["top1"] < 0.2 and 0.35 < m["top5"] < 0.65  # chance: 0.1 and 0.5


def test_classifier_is_renormalised_template_mean():
  emb = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)  # 2 classes x 2 templates
  w = zeroshot.classifier_weights(emb, 2)
  np.testing.assert_allclose(w, [[np.sqrt(.5), np.sqrt(.5)], [1, 0]], rtol=1e-6)


def test_prompts_are_class_major():
  assert prompts.render(("a {}", "the {}"), ["x", "y"]) == ["a x", "the x", "a y", "the y"]


def test_recall_with_several_captions_per_image():
  zimg = np.eye(3, dtype=np.float32)
  # Captions 0,1 -> image 0; 2 -> image 1; 3,4 -> image 2.
  ztxt = np.array([[0.1, 0.9, 0], [1, 0, 0], [0, 1, 0], [0, 0.5, 0.4], [0.2, 0.3, 0.1]], np.float32)
  owner = np.array([0, 0, 1, 2, 2])
  r = retrieval.recall_at_k(zimg, ztxt, owner, ks=(1, 2), chunk=2)
  # img0 best own caption (1) ranks 1st; img1 own caption 2 ranks 1st (tie with 0? 0.9<1);
  # img2 best own caption 3 (0.4) ranks 1st.
  assert r["img2txt_r@1"] == 1.0
  # txt2img: c0 -> img1 best (0.9 > 0.1) miss@1, rank 2 hit@2; c1 hit; c2 hit;
  # c3 -> img1 0.5 > img2 0.4 miss@1, hit@2; c4 -> img1 0.3 > img0 0.2 > img2 0.1 miss@2.
  np.testing.assert_allclose(r["txt2img_r@1"], 2 / 5)
  np.testing.assert_allclose(r["txt2img_r@2"], 4 / 5)


def test_recall_chunking_matches_unchunked():
  rng = np.random.default_rng(1)
  zimg, ztxt = rng.normal(size=(37, 8)), rng.normal(size=(90, 8))
  owner = np.concatenate([np.arange(37), rng.integers(0, 37, 53)])  # Every image captioned.
  assert retrieval.recall_at_k(zimg, ztxt, owner, chunk=7) == retrieval.recall_at_k(
      zimg, ztxt, owner, chunk=1000)


def test_ties_are_broken_by_index():
  collapsed = np.ones((6, 4))  # Every class scores the same: the lowest class index wins.
  m = ranking.accuracy_metrics(collapsed, np.array([0, 1, 2, 3, 0, 1]))
  assert m["top1"] == 2 / 6 and m["mean_per_class_recall"] == 1 / 4
  # Image i owns captions 2i, 2i+1: image 0 and the captions of image 0 are first.
  r = retrieval.recall_at_k(np.ones((4, 3)), np.ones((8, 3)), np.repeat(np.arange(4), 2),
                            ks=(1, 3))
  assert r == {"img2txt_r@1": 0.25, "txt2img_r@1": 0.25, "img2txt_r@3": 0.5, "txt2img_r@3": 0.75}


def test_mean_per_class_recall_weights_classes_equally():
  scores = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
  labels = np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])
  assert ranking.accuracy_metrics(scores, labels[1]) == {"top1": 0.75,
                                                          "mean_per_class_recall": 0.75}
  m = ranking.accuracy_metrics(np.array([[1, 0], [1, 0], [1, 0], [1, 0]]), np.array([0, 0, 0, 1]))
  assert m["top1"] == 0.75 and m["mean_per_class_recall"] == 0.5


def test_canonicalize_exactly():
  assert prompts.canonicalize("  A Photo of the T-Shirt, (dirty)!  ") == "a photo of the tshirt dirty"
  assert prompts.canonicalize("a\tphoto\n of  a  {}.") == "a photo of a"


def test_clip_prompt_sets():
  imagenet = prompts.templates_for("imagenet2012", "clip")
  assert len(imagenet) == 80 and all(t.count("{}") == 1 for t in imagenet)
  assert imagenet[0] == "a bad photo of a {}."
  assert len(prompts.templates_for("cifar10", "clip")) == 18
  names = prompts.clip_classnames("imagenet2012")
  assert len(names) == 1000 and names[:2] == ["tench", "goldfish"]
  assert prompts.clip_classnames("imagenet_v2") == names  # Same 1000 classes.
  assert prompts.templates_for("anything", "single") == ("a photo of a {}.",)
  with pytest.raises(ValueError, match="one '{}' each"):
    prompts.templates_for("cifar10", ("no placeholder",))
  with pytest.raises(ValueError, match="no CLIP templates for 'nope'"):
    prompts.templates_for("nope", "clip")


def test_zeroshot_prompts_templates_and_canonicalisation():
  ev = zeroshot.ZeroShot(None, dataset="shapes_color", num_examples=8, image_size=16,
                         templates=("A {} Thing!", "the {}-one."), canonicalize=True)
  assert ev.prompts[:4] == ["a red thing", "the redone", "a green thing", "the greenone"]
  assert ev.tokens.shape == (16, 16)
  ev = zeroshot.ZeroShot(None, dataset="shapes_shape", num_examples=8, image_size=16,
                         templates="single", classnames=[f"c{i}" for i in range(8)])
  assert ev.prompts[:2] == ["a photo of a c0.", "a photo of a c1."]
  with pytest.raises(ValueError, match="has 8 classes, but 2 class names"):
    zeroshot.ZeroShot(None, dataset="shapes_shape", num_examples=8, classnames=["a", "b"])


def test_ridge_predictions_equal_the_direct_solution():
  rng = np.random.default_rng(0)
  for n, d in ((12, 30), (60, 8)):  # Dual and primal branches.
    x, y, xe = rng.normal(size=(n, d)), rng.integers(0, 3, n), rng.normal(size=(20, d))
    pred = ridge.ridge_predictions(x, y, xe, 3, l2_grid=(0.1, 10.0))
    xc, mean = x - x.mean(0), x.mean(0)
    t = 2.0 * np.eye(3)[y] - 1
    for row, l2 in zip(pred, (0.1, 10.0)):
      lam = l2 * np.mean(np.sum(xc ** 2, axis=1))
      w = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ (t - t.mean(0)))
      np.testing.assert_array_equal(row, np.argmax((xe - mean) @ w + t.mean(0), axis=1))


def test_fewshot_separable_and_unlearnable():
  rng = np.random.default_rng(0)
  centres = 5 * rng.normal(size=(10, 32))
  def sample(n):
    y = rng.integers(0, 10, n)
    return centres[y] + rng.normal(size=(n, 32)), y
  (xp, yp), (xt, yt) = sample(800), sample(500)
  acc = fewshot.fewshot_accuracy(xp, yp, xt, yt, 10, shots=(1, 5), seeds=3)
  assert all(np.all(a == 1.0) for a in acc.values())
  noise = rng.normal(size=(800, 32)), rng.normal(size=(500, 32))  # Labels carry no signal.
  acc = fewshot.fewshot_accuracy(noise[0], yp, noise[1], yt, 10, shots=(1, 10), seeds=4)
  for a in acc.values():
    assert abs(np.mean(a) - 0.1) < 0.05
  with pytest.raises(ValueError, match="needs 30 pool examples per class.*raise num_train_examples"):
    fewshot.fewshot_accuracy(xp[:100], yp[:100], xt, yt, 10, shots=(25,))


def test_unknown_eval_option_is_a_config_error():
  with pytest.raises(ConfigError, match=r"zeroshot takes no 'num_exmaples' \(did you mean "
                                        r"'num_examples'\?\)"):
    evaluators.make_evaluators(
        {"z": {"type": "zeroshot", "dataset": "shapes_shape", "num_exmaples": 3}}, None, {})
  with pytest.raises(ConfigError, match="zeroshot needs \\['dataset'\\]"):
    evaluators.make_evaluators({"z": {"type": "zeroshot"}}, None, {})
  with pytest.raises(ConfigError, match="is not one of"):
    evaluators.make_evaluators({"z": {"type": "linear"}}, None, {})


def test_process_ranges_cover_each_example_once():
  for n in (0, 1, 7, 37, 512):
    for count in (1, 2, 3, 8):
      ranges = [data.process_range(n, i, count) for i in range(count)]
      assert [i for r in ranges for i in r] == list(range(n))
      assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_recall_equals_a_stable_sort_reference_with_ties():
  rng = np.random.default_rng(3)
  zimg = rng.normal(size=(30, 6)).round(0)  # Rounded: many exact ties.
  owner = np.concatenate([np.arange(30), rng.integers(0, 30, 50)])
  ztxt = zimg[owner] + rng.normal(size=(80, 6)).round(0)
  ref_img, ref_txt = [], []
  sim = zimg @ ztxt.T
  for i in range(30):
    order = np.argsort(-sim[i], kind="stable")
    ref_img.append(np.flatnonzero(owner[order] == i)[0])
  for j in range(80):
    ref_txt.append(np.flatnonzero(np.argsort(-sim[:, j], kind="stable") == owner[j])[0])
  got = retrieval.recall_at_k(zimg, ztxt, owner, ks=(1, 3, 10), chunk=7)
  for k in (1, 3, 10):
    assert got[f"img2txt_r@{k}"] == np.mean(np.array(ref_img) < k)
    assert got[f"txt2img_r@{k}"] == np.mean(np.array(ref_txt) < k)
  with pytest.raises(ValueError, match="image 2 has no caption"):
    retrieval.recall_at_k(zimg[:3], ztxt[:2], np.array([0, 1]))


# --- The evaluator interface.


def test_every_evaluator_derives_from_the_base_and_types_its_options():
  for kind, cls in evaluators.EVALUATORS.items():
    assert issubclass(cls, evaluators.Evaluator) and cls.kind == kind
    options = list(inspect.signature(cls.__init__).parameters.values())[2:]  # After self, embedder.
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options), kind
    assert [p.name for p in options if p.annotation is inspect.Parameter.empty] == [], kind
  with pytest.raises(TypeError, match="abstract"):
    type("Incomplete", (evaluators.Evaluator,), {"embed": lambda self, params: {}})()


def test_linear_probe_benchmark_names():
  ev = linear_probe.LinearProbe(None, dataset="shapes_position", num_train_examples=10,
                                num_examples=4, image_size=16)
  p = "linear_probe/shapes_position/"
  got = ev.benchmark({p + "top1": .5, p + "top5": .9, p + "mean_per_class_recall": .4,
                      p + "log10_l2": -3.0, "zeroshot/shapes_position/top1": .2})
  assert got == {"lp_acc1": .5, "lp_acc5": .9, "lp_mean_per_class_recall": .4}
  assert ev.benchmark_task == "linear_probe"


# --- Shapes tasks for attributes the captions mention but no task labelled before.


@pytest.mark.parametrize("task,key,names", [("shapes_size", "size", shapes.SIZE_NAMES),
                                            ("shapes_position", "position", shapes.POSITIONS)])
def test_size_and_position_tasks(task, key, names):
  ev = zeroshot.ZeroShot(None, dataset=task, num_examples=40, image_size=16)
  assert ev.classnames == list(names) and len(ev.templates) == 64
  assert set(ev.eval_set.labels) == set(range(len(names)))
  for i, label in enumerate(ev.eval_set.labels):
    ex = shapes.draw(0, "test", i, 16, combos=shapes.ALL_COMBOS, num_objects=1)
    np.testing.assert_array_equal(ev.eval_set.images[i], ex["image"])
    assert ex[key] == label
    # The true class's prompt for the object's own colour and shape is one of its captions.
    assert ev.prompts[label * 64 + ex["shape"] * 8 + ex["color"]] in ex["captions"]


# --- Linear probe: streamed sufficient statistics against in-memory ridge regression.


def _blobs(rng, n, d=12, classes=4, spread=1.0):
  centres = 4 * rng.normal(size=(classes, d))
  y = rng.integers(0, classes, n)
  return centres[y] + spread * rng.normal(size=(n, d)), y


def _chunks(x, size):
  return ((s, x[s:s + size]) for s in range(0, len(x), size))


def _direct(x, y, l2, classes=4):
  """In-memory ridge on centred features and {-1, +1} one-hot targets: (weights, bias)."""
  mean = x.mean(0)
  xc, t = x - mean, 2.0 * np.eye(classes)[y] - 1
  lam = l2 * np.mean(np.sum(xc ** 2, axis=1))
  w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (t - t.mean(0)))
  return w, t.mean(0) - mean @ w


def test_linear_probe_equals_the_direct_ridge_solution():
  x, y = _blobs(np.random.default_rng(0), 300, spread=4.0)  # Overlapping: the strength matters.
  held = linear_probe.holdout_mask(300, 0.2, 10_000, seed=0)
  assert held.sum() == 60
  moments, hx, hy = linear_probe.accumulate(_chunks(x, 7), y, 0, held, 4)
  np.testing.assert_array_equal(hx, x[held])
  np.testing.assert_array_equal(hy, y[held])
  w, b, best, acc = linear_probe.fit(moments, hx, hy)
  ref = []
  for l2 in ridge.L2_GRID:  # Fit without the held-out rows, score on them.
    wd, bd = _direct(x[~held], y[~held], l2)
    ref.append(np.mean(np.argmax(x[held] @ wd + bd, axis=1) == y[held]))
  np.testing.assert_allclose(acc, ref, atol=1e-12)
  assert best == ridge.best_strength(np.array(ref)) and 0 < best < len(ridge.L2_GRID) - 1
  wd, bd = _direct(x, y, ridge.L2_GRID[best])  # Refit on every row.
  np.testing.assert_allclose(w, wd, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(b, bd, rtol=1e-6, atol=1e-9)


def test_linear_probe_is_independent_of_chunks_and_processes():
  x, y = _blobs(np.random.default_rng(1), 257, spread=3.0)
  held = linear_probe.holdout_mask(257, 0.25, 50, seed=3)  # 50: the cap, not 25%.
  assert held.sum() == 50
  ref = linear_probe.fit(*linear_probe.accumulate(_chunks(x, 257), y, 0, held, 4))
  for count, chunk in ((1, 1), (1, 10), (2, 16), (3, 7), (8, 5)):
    parts = []
    for p in range(count):  # Each simulated process streams its own contiguous share.
      r = data.process_range(257, p, count)
      parts.append(linear_probe.accumulate(_chunks(x[r.start:r.stop], chunk), y[r.start:r.stop],
                                           r.start, held, 4))
    moments = parts[0][0]
    for m, _, _ in parts[1:]:
      moments = moments + m
    hx = np.concatenate([p[1] for p in parts])
    np.testing.assert_array_equal(hx, x[held])  # The same sample, in dataset order.
    w, b, best, acc = linear_probe.fit(moments, hx, np.concatenate([p[2] for p in parts]))
    assert best == ref[2] and np.array_equal(acc, ref[3])
    np.testing.assert_allclose(w, ref[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, ref[1], rtol=1e-9, atol=1e-12)


def _probe_accuracy(x, y, xt, yt, classes):
  held = linear_probe.holdout_mask(len(x), 0.2, 10_000, seed=0)
  w, b, _, _ = linear_probe.fit(*linear_probe.accumulate(_chunks(x, 64), y, 0, held, classes))
  return np.mean(np.argmax(xt @ w + b, axis=1) == yt)


def test_linear_probe_separable_and_label_noise():
  rng = np.random.default_rng(2)
  x, y = _blobs(rng, 2500, d=32, classes=10)
  xt, yt = x[2000:], y[2000:]
  assert _probe_accuracy(x[:2000], y[:2000], xt, yt, 10) == 1.0
  noisy = rng.permutation(y)  # Labels that carry no signal: chance (0.1) on fresh labels.
  acc = _probe_accuracy(x[:2000], noisy[:2000], xt, noisy[2000:], 10)
  assert abs(acc - 0.1) < 0.05
  with pytest.raises(ValueError, match="held-out sample has 0 of 3"):
    linear_probe.holdout_mask(3, 0.1, 10, 0)
  with pytest.raises(ValueError, match="label 7 is outside 0..3"):
    ridge.Moments.zeros(2, 4).add(np.ones((2, 2)), np.array([1, 7]))


class PixelModel:
  """A stand-in image tower whose features are the 8x8-pooled brightness of the image (64-d):
  the grid cell of the one object is linearly readable from them."""

  def __call__(self, params, images, texts):
    del params, texts
    b, h, w, _ = images.shape
    pooled = images.max(axis=-1).reshape(b, 8, h // 8, 8, w // 8).mean(axis=(2, 4))
    pooled = pooled.reshape(b, 64)
    return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True), None, {
        "img": {"pre_logits": pooled}}


def _pixel_probe():
  """A linear probe of the object's position on PixelModel features, batches of 24."""
  embedder = evaluators.Embedder(PixelModel(), sharding.make_mesh(), batch_size=24)
  return embedder, linear_probe.LinearProbe(embedder, dataset="shapes_position", image_size=32,
                                            num_train_examples=250, num_examples=61)


def test_linear_probe_reads_the_object_position_from_pixels():
  embedder, ev = _pixel_probe()  # 8 devices: 250 and 61 rows leave padded last batches.
  emb = ev.embed({})
  m = ev.metrics(emb)
  assert set(m) == {f"linear_probe/shapes_position/{k}" for k in
                    ("top1", "top5", "mean_per_class_recall", "log10_l2")}
  assert m["linear_probe/shapes_position/top1"] > 0.9  # Chance: 1/9.
  np.testing.assert_array_equal(emb["test_labels"], ev.eval_set.labels)
  # The streamed probe equals one fit on all features in memory.
  x = embedder.images({}, ev.train_set.images, "pre_logits")
  y = ev.train_set.labels
  w, b, best, _ = linear_probe.fit(ridge.Moments.of(x, y, 9), x[ev.held], y[ev.held])
  np.testing.assert_allclose(emb["weights"], w, rtol=1e-6, atol=1e-9)
  assert emb["l2"] == ridge.L2_GRID[best]
  xt = embedder.images({}, ev.eval_set.images, "pre_logits")
  np.testing.assert_array_equal(emb["test_ranks"],
                                ranking.ranks(xt.astype(np.float64) @ w + b, emb["test_labels"]))
  assert ev.preview_images(5).shape == (5, 32, 32, 3)
  # Few-shot probes of the same features, built from a config entry like the trainer's.
  evals = evaluators.make_evaluators({"position": dict(
      type="fewshot", dataset="shapes_position", shots=(10,), seeds=2, num_train_examples=250,
      num_examples=61)}, embedder, {"image_size": 32, "max_len": 16})
  assert evals["position"][0].run({})["fewshot/shapes_position/10shot"] > 0.6


# --- Two real processes (CPU collectives over gloo, 2 devices each).

_WORKER = """
import sys
import numpy as np
from big_vision_lite import distributed
distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import jax
from tests.test_evaluators import _pixel_probe
p = jax.process_index()
rows = (np.arange(6 * (p + 1), dtype=np.float64).reshape(-1, 2) + p) / 3  # Not float32 values.
gathered = dict(rows=distributed.gather_rows(rows),
                big=distributed.gather_rows(np.array([2**40 + p], np.int64)),
                strings=np.array(distributed.gather_strings(["\u00e9" * p, "x"])),
                sum=distributed.sum_over_processes(np.full(3, 0.1 * (p + 1))))
_, ev = _pixel_probe()
np.savez(sys.argv[3], **gathered, **ev.embed({}))
"""


def test_two_processes_gather_exactly_and_probe_as_one(tmp_path):
  address = f"127.0.0.1:{free_port()}"
  env = process_env(2)
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, address, str(p),
                             str(tmp_path / f"{p}.npz")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for p in range(2)]
  for p in procs:
    out = p.communicate(timeout=240)[0]
    assert p.returncode == 0, out[-3000:]
  _, ev = _pixel_probe()  # One process, 8 devices.
  single = ev.embed({})
  for p in range(2):
    got = np.load(tmp_path / f"{p}.npz")
    expected = [(np.arange(6 * (q + 1), dtype=np.float64).reshape(-1, 2) + q) / 3 for q in (0, 1)]
    np.testing.assert_array_equal(got["rows"], np.concatenate(expected))  # Bit for bit.
    assert got["big"].tolist() == [2**40, 2**40 + 1]
    assert got["strings"].tolist() == ["", "x", "\u00e9", "x"]
    np.testing.assert_array_equal(got["sum"], np.full(3, 0.1) + np.full(3, 0.2))
    for key in ("test_ranks", "test_labels", "holdout_accuracy", "l2"):
      np.testing.assert_array_equal(got[key], single[key], err_msg=key)
    # XLA rounds the float32 features differently for 6 rows per device than for 3 (1 ulp).
    np.testing.assert_allclose(got["weights"], single["weights"], rtol=1e-4, atol=1e-8)


# --- LocCa and localisation evaluators: metrics on constructed outputs with known answers.

def test_iou_and_referring_metrics():
  from big_vision_lite.evaluators import localisation  # pylint: disable=import-outside-toplevel
  a = np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 1], [0.5, 0.5, 1, 1]], np.float32)
  b = np.array([[0, 0, 0.5, 1], [0, 0, 1, 1], [0, 0, 0.5, 0.5]], np.float32)
  np.testing.assert_allclose(localisation.iou(a, b), [0.5, 1.0, 0.0])
  ev = localisation.Referring.__new__(localisation.Referring)
  ev.dataset = "shapes"
  assert ev.metrics({"boxes": a, "true_boxes": b}) == {
      "referring/shapes/acc@0.5": pytest.approx(2 / 3), "referring/shapes/mean_iou": 0.5}


def test_patch_labels_follow_the_drawn_objects():
  from big_vision_lite.evaluators import localisation  # pylint: disable=import-outside-toplevel
  region = {"box": [0, 0, 0.5, 0.5], "shape": 1, "color": 2}  # A square in the top-left quarter.
  labels = localisation.patch_labels([[region]], 32, 4)[0].reshape(4, 4)
  background = len(shapes.COLORS)
  expected = np.full((4, 4), background)
  expected[:2, :2] = 2  # The square covers 80% of its box's side: most of those 4 patches.
  np.testing.assert_array_equal(labels, expected)
  ev = localisation.DenseProbe.__new__(localisation.DenseProbe)
  ev.dataset, ev.classes = "shapes", 9
  m = ev.metrics({"predictions": np.array([0, 0, 8, 8]), "labels": np.array([0, 8, 8, 8])})
  assert m["dense_probe/shapes/accuracy"] == 0.75
  assert m["dense_probe/shapes/mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_captioning_exact_match_and_cider():
  from big_vision_lite.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  from big_vision_lite.evaluators import captioning  # pylint: disable=import-outside-toplevel
  tok = tok_lib.get(tok_lib.SHAPES_MODEL)
  ev = captioning.Captioning.__new__(captioning.Captioning)
  ev.dataset, ev.tokenizer = "shapes", tok
  ev.references = [["a red circle", "a small red circle"], ["a blue square"]]
  ids = tok.encode(["A small red circle.", "a blue star"], 12)
  ids[0, 6:] = ids[1, 0]  # Tokens after EOS are not read.
  m = ev.metrics({"ids": ids})
  assert m["captioning/shapes/exact_match"] == 0.5
  refs = [["a red circle", "a big red circle"], ["a blue square", "the blue square"],
          ["two shapes", "a green star and a ring"]]
  assert captioning.cider(refs, ["a red circle", "a blue square", "two shapes"]) > \
      captioning.cider(refs, ["a blue square", "two shapes", "a red circle"])
