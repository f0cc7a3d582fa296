"""tfds sources: a dataset built for the test in ArrayRecord, read without TensorFlow."""

import io
import sys

import fsspec
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from big_vision_lite.data import loader, ops, shapes, sources
from big_vision_lite.tools import prepare_tfds


class BvlTinyCaptions(tfds.core.GeneratorBasedBuilder):
  """24 drawn images with two captions each and a shape label."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
        "label": tfds.features.ClassLabel(names=list(shapes.SHAPES))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(24), "test": self._generate_examples(8, 100)}

  def _generate_examples(self, n, offset=0):
    for i in range(offset, offset + n):
      ex = shapes.draw(0, "test", i, image_size=40, num_objects=1)
      buf = io.BytesIO()
      Image.fromarray(ex["image"]).save(buf, "PNG")  # Encoded bytes: no TensorFlow needed.
      yield i, {"image": buf.getvalue(), "captions": {"text": ex["captions"][:2]},
                "label": ex["shape"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  prepare_tfds.main(["bvl_tiny_captions", "--data_dir", d])
  return d


PP = ("decode|resize(24)|value_range(-1,1)|choice(inkey='captions',outkey='text')|"
      "tokenize(max_len=12)|keep('image','labels')")


def test_reads_images_and_captions_without_tensorflow(data_dir):
  src = sources.TfdsSource("bvl_tiny_captions", split="train", data_dir=data_dir,
                           caption_key="captions/text")
  assert len(src) == 24
  ex = sources.standardize(src[0])
  assert isinstance(ex["image"], bytes)  # Left encoded: the `decode` op decodes it.
  image = ops.parse("decode")(ex, np.random.default_rng(0))["image"]
  assert image.shape == (40, 40, 3) and image.dtype == np.uint8
  assert len(ex["captions"]) == 2 and all(isinstance(c, str) for c in ex["captions"])
  assert shapes.SHAPES[int(src[0]["label"])] in ex["captions"][0]
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_the_exact_sequence(data_dir, workers):
  kw = dict(data={"name": "bvl_tiny_captions", "split": "train", "data_dir": data_dir,
                  "caption_key": "captions/text"}, pp=PP, global_batch=8, seed=5,
            num_workers=workers, process_index=0, process_count=1)
  straight = loader.GrainInput(**kw)
  expected = [next(straight) for _ in range(7)]  # 56 examples: more than two epochs of 24
  straight.close()
  first = loader.GrainInput(**kw)
  got = [next(first) for _ in range(3)]
  state = first.get_state()
  first.close()
  resumed = loader.GrainInput(**kw)
  resumed.set_state(state)
  got += [next(resumed) for _ in range(4)]
  resumed.close()
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_two_processes_split_a_tfds_split(data_dir):
  def seen(p):
    it = loader.GrainInput(data={"name": "bvl_tiny_captions", "split": "test",
                                 "data_dir": data_dir, "caption_key": "captions/text"},
                           pp="choice(inkey='captions',outkey='text')|keep('text')",
                           global_batch=8, process_index=p, process_count=2)
    return {t.split(" at ")[0] + str(i) for i, t in enumerate(next(it)["text"])}
  a, b = seen(0), seen(1)
  assert len(a) == 4 and len(b) == 4


def test_clear_errors(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"not prepared under .*prepare_tfds bvl_tiny_captions"):
    sources.TfdsSource("bvl_tiny_captions", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="unknown tfds dataset 'no_such_dataset_xyz'"):
    sources.make_source({"name": "no_such_dataset_xyz", "data_dir": str(tmp_path)})
  with pytest.raises(ValueError, match=r"has no split 'validation'; it has \['train', 'test'\]|"
                                       r"has no split 'validation'; it has \['test', 'train'\]"):
    sources.TfdsSource("bvl_tiny_captions", split="validation", data_dir=data_dir)


@pytest.fixture(scope="module")
def tiny():
  """(params, Embedder) of a tiny two-tower model, shared: initialising and compiling cost."""
  import jax  # pylint: disable=import-outside-toplevel
  from big_vision_lite import sharding  # pylint: disable=import-outside-toplevel
  from big_vision_lite.evaluators.embedder import Embedder  # pylint: disable=import-outside-toplevel
  from big_vision_lite.models.two_towers import TwoTowers  # pylint: disable=import-outside-toplevel
  model = TwoTowers(image=dict(variant="mu/8", width=16, mlp_dim=32),
                    text=dict(variant="mu", width=16, mlp_dim=32, vocab_size=256), out_dim=8)
  params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 24, 24, 3)),  # Eager: 20 s.
                               np.zeros((1, 12), np.int32))
  return params["params"], Embedder(lambda p, i, t: model.apply({'params': p}, i, t), sharding.make_mesh(), batch_size=8)


def test_evaluators_on_a_tfds_dataset(data_dir, tiny):
  from big_vision_lite.evaluators import fewshot, retrieval, zeroshot  # pylint: disable=import-outside-toplevel
  params, embedder = tiny
  common = dict(data_dir=data_dir, pp="decode|resize(24)", max_len=12)
  zs = zeroshot.ZeroShot(embedder, dataset="bvl_tiny_captions", split="test", templates="single",
                         **common)
  assert zs.classnames == list(shapes.SHAPES) and zs.prompts[0] == "a photo of a circle."
  emb = zs.embed(params)
  assert emb["image_embeddings"].shape == (8, 8) and emb["class_embeddings"].shape == (8, 8)
  expected = [shapes.draw(0, "test", i, 40, num_objects=1)["shape"] for i in range(100, 108)]
  assert sorted(emb["labels"]) == sorted(expected)  # tfds stores examples in its own order.
  assert set(zs.metrics(emb)) == {f"zeroshot/bvl_tiny_captions/{k}" for k in
                                  ("top1", "top5", "mean_per_class_recall")}
  rt = retrieval.Retrieval(embedder, dataset="bvl_tiny_captions", split="train", **common)
  emb = rt.embed(params)
  assert emb["text_embeddings"].shape == (48, 8)  # 24 images x 2 captions
  np.testing.assert_array_equal(emb["caption_image"], np.repeat(np.arange(24), 2))
  assert 0 <= rt.run(params)["retrieval/bvl_tiny_captions/img2txt_r@1"] <= 1
  fs = fewshot.FewShot(embedder, dataset="bvl_tiny_captions", train_split="train", split="test",
                       shots=(1,), holdout_per_class=0, seeds=2, num_train_examples=24,
                       data_dir=data_dir, pp="decode|resize(24)")
  with pytest.raises(ValueError, match="raise num_train_examples"):  # 24 images, 8 classes.
    fs.run(params)


def test_unreadable_evaluation_example_is_an_error(data_dir):
  from big_vision_lite.evaluators import data  # pylint: disable=import-outside-toplevel
  src = sources.TfdsSource("bvl_tiny_captions", split="test", data_dir=data_dir)
  images = data.LazyImages(src, range(8), ops.parse("decode|central_crop(64)"), "tiny[test]")
  with pytest.raises(ValueError, match=r"tiny\[test\]: example 0 cannot be read or preprocessed"):
    images[0:2]


class _CountingRecords:
  """A data source that counts the records read."""

  def __init__(self, records):
    self.records, self.reads = records, 0

  def __getitem__(self, index):
    self.reads += 1
    return self.records[index]


def test_labels_are_read_when_needed_and_once(data_dir):
  from big_vision_lite.evaluators import data  # pylint: disable=import-outside-toplevel
  src = sources.TfdsSource("bvl_tiny_captions", split="train", data_dir=data_dir)
  records = _CountingRecords(src.source)
  labels = data.LazyLabels(records, range(4, 24), "label", "tiny[train]")
  assert records.reads == 0
  expected = [int(src.source[i]["label"]) for i in range(4, 24)]
  assert labels[2:5].tolist() == expected[2:5] and records.reads == 3
  assert labels[3:6].tolist() == expected[3:6] and records.reads == 4  # Rows 3, 4 kept.
  assert np.asarray(labels).tolist() == expected and records.reads == 20


def test_linear_probe_on_a_tfds_dataset(data_dir, tiny):
  from big_vision_lite.evaluators import linear_probe  # pylint: disable=import-outside-toplevel
  params, embedder = tiny
  lp = linear_probe.LinearProbe(embedder, dataset="bvl_tiny_captions", split="test",
                                data_dir=data_dir, pp="decode|resize(24)")
  assert lp.train_set.total == 24 and lp.held.sum() == 5  # The whole train split; 20% held out.
  emb = lp.embed(params)
  expected = [shapes.draw(0, "test", i, 40, num_objects=1)["shape"] for i in range(100, 108)]
  assert sorted(emb["test_labels"]) == sorted(expected)
  assert emb["weights"].shape == (16, 8) and emb["holdout_accuracy"].shape == (19,)  # Width 16.
  m = lp.metrics(emb)
  assert 0 <= m["linear_probe/bvl_tiny_captions/top1"] <= m["linear_probe/bvl_tiny_captions/top5"]


def test_classification_fine_tuning_on_a_tfds_dataset(data_dir, tmp_path):
  """objectives.classify trains the image tower and a head on a tfds dataset's label feature, and
  the classify evaluator measures it on the test split."""
  from big_vision_lite import metrics, train  # pylint: disable=import-outside-toplevel
  from tests.test_train import CONFIG, TINY  # pylint: disable=import-outside-toplevel
  data = {"name": "bvl_tiny_captions", "split": "train", "data_dir": data_dir,
          "caption_key": None}
  evals = {"test": {"type": "classify", "dataset": "bvl_tiny_captions", "split": "test",
                    "data_dir": data_dir, "pp": "decode|resize(32)"}}
  results = train.main(["--config", CONFIG, "--workdir", str(tmp_path)] + TINY + [
      "--config.objectives={'classify': {'dataset': 'bvl_tiny_captions', 'data_dir': %r}}"
      % data_dir, f"--config.input.data={data!r}",
      "--config.input.pp=decode|resize(32)|value_range(-1,1)|keep('image','label')",
      f"--config.evals={evals!r}", "--config.total_steps=3", "--config.log_training_steps=1"])
  assert set(results) == {f"classify/bvl_tiny_captions/{k}" for k in
                          ("top1", "top5", "mean_per_class_recall")}
  rows = metrics.read(str(tmp_path))
  assert all(0 <= r["train/accuracy"] <= 1 for r in rows)
  assert rows[0]["train/params_trainable"] == rows[0]["train/params"]


def test_a_remote_data_dir_reads_its_metadata_and_says_when_records_cannot_be_read(
    data_dir, s3_endpoint):
  """On S3 (a loopback server), tfds reads the dataset's metadata through etils; ArrayRecord's
  reader cannot open s3:// files, which is said at start with the way out."""
  del s3_endpoint
  fs = fsspec.filesystem("s3", skip_instance_cache=True)
  fs.mkdir("bvl-tfds")
  fs.put(data_dir + "/", "bvl-tfds/data/", recursive=True)
  with pytest.raises(sources.DataError, match=r"under s3://bvl-tfds/data: its ArrayRecord files "
                                              r"cannot be read in place.*copy the prepared"):
    sources.TfdsSource("bvl_tiny_captions", data_dir="s3://bvl-tfds/data",
                       caption_key="captions/text")
  with pytest.raises((sources.DataError, FileNotFoundError), match="s3://no-such-bucket/data"):
    sources.TfdsSource("bvl_tiny_captions", data_dir="s3://no-such-bucket/data")
