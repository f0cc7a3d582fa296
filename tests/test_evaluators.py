"""Evaluator metrics on constructed embeddings with known answers."""

import numpy as np

from big_vision_lite.evaluators import prompts, retrieval, zeroshot


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
  owner = rng.integers(0, 37, 90)
  assert retrieval.recall_at_k(zimg, ztxt, owner, chunk=7) == retrieval.recall_at_k(
      zimg, ztxt, owner, chunk=1000)
