"""Evaluator metrics on constructed embeddings with known answers."""

import numpy as np
import pytest

from big_vision_lite import evaluators
from big_vision_lite.config import ConfigError
from big_vision_lite.evaluators import common, fewshot, prompts, retrieval, zeroshot


def test_zeroshot_perfect_and_shuffled():
  rng = np.random.default_rng(0)
  classes = np.linalg.qr(rng.normal(size=(16, 10)))[0].T  # 10 orthonormal class directions
  labels = rng.integers(0, 10, 500)
  images = classes[labels] + 0.05 * rng.normal(size=(500, 16))
  m = zeroshot.accuracy_metrics(images @ classes.T, labels)
  assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class_recall"] == 1.0
  m = zeroshot.accuracy_metrics(images @ classes.T, rng.permutation(labels))
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
  m = zeroshot.accuracy_metrics(collapsed, np.array([0, 1, 2, 3, 0, 1]))
  assert m["top1"] == 2 / 6 and m["mean_per_class_recall"] == 1 / 4
  # Image i owns captions 2i, 2i+1: image 0 and the captions of image 0 are first.
  r = retrieval.recall_at_k(np.ones((4, 3)), np.ones((8, 3)), np.repeat(np.arange(4), 2),
                            ks=(1, 3))
  assert r == {"img2txt_r@1": 0.25, "txt2img_r@1": 0.25, "img2txt_r@3": 0.5, "txt2img_r@3": 0.75}


def test_mean_per_class_recall_weights_classes_equally():
  scores = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
  labels = np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])
  assert zeroshot.accuracy_metrics(scores, labels[1]) == {"top1": 0.75,
                                                          "mean_per_class_recall": 0.75}
  m = zeroshot.accuracy_metrics(np.array([[1, 0], [1, 0], [1, 0], [1, 0]]), np.array([0, 0, 0, 1]))
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
    pred = fewshot.ridge_predictions(x, y, xe, 3, l2_grid=(0.1, 10.0))
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
    evaluators.make({"z": {"type": "zeroshot", "dataset": "shapes_shape", "num_exmaples": 3}},
                    None, {})
  with pytest.raises(ConfigError, match="zeroshot needs \\['dataset'\\]"):
    evaluators.make({"z": {"type": "zeroshot"}}, None, {})
  with pytest.raises(ConfigError, match="is not one of"):
    evaluators.make({"z": {"type": "linear"}}, None, {})


def test_process_ranges_cover_each_example_once():
  for n in (0, 1, 7, 37, 512):
    for count in (1, 2, 3, 8):
      ranges = [common.process_range(n, i, count) for i in range(count)]
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
