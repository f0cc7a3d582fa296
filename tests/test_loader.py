"""Training inputs through their one interface: element_spec without consuming, exact resume,
process slicing, skipped records, and the stop when a pipeline fails on every record."""

import contextlib
import signal
import tarfile
import time

import ml_collections
import numpy as np
import pytest

from big_vision_lite import errors
from big_vision_lite.data import loader, shapes, sources
from tests.test_sources import add_member, jpeg, shard_dir  # noqa: F401 (shard_dir: a fixture)

PP = ("decode|resize(32)|flip_lr|value_range(-1,1)|choice(inkey='captions',outkey='text')|"
      "tokenize(max_len=12,inkey='text',outkey='labels')|keep('image','labels')")
# tokenize reads 'text' (its default inkey), which no op makes: every record fails there.
BROKEN_PP = "decode|resize(32)|tokenize(max_len=12)|keep('image','labels')"


def _stream(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _spec_of(batch):
  return {k: (v.shape, v.dtype) for k, v in batch.items()}


@contextlib.contextmanager
def _deadline(seconds: int):
  """Turns a hang (the fault under test) into a failure instead of a stuck test run."""
  def fail(*_):
    raise TimeoutError(f"no result within {seconds} s")
  previous = signal.signal(signal.SIGALRM, fail)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _tar(path, good: list[bool], caption=True):
  """A shard whose record i is a real image if good[i], else bytes that do not decode."""
  with tarfile.open(path, "w") as tar:
    for i, ok in enumerate(good):
      add_member(tar, f"{i:03d}.jpg", jpeg(i) if ok else b"\xff\xd8 not a jpeg")
      if caption:
        add_member(tar, f"{i:03d}.txt", f"good {i}".encode() if ok else b"corrupt")
  return {"name": "tar", "pattern": str(path)}


# --- ShapesInput.

def test_shapes_input_through_the_interface():
  kw = dict(global_batch=8, image_size=32, max_len=10, process_index=0, process_count=1)
  it = loader.ShapesInput(**kw)
  assert isinstance(it, loader.TrainInput) and it.skipped == 0
  spec = it.element_spec
  assert spec == {"image": ((8, 32, 32, 3), np.float32), "labels": ((8, 10), np.int32),
                  "region_labels": ((8, 10), np.int32), "region_box": ((8, 4), np.float32),
                  "region_valid": ((8,), np.float32)}
  assert it.get_state() == {"step": 0}  # Knowing the spec drew nothing.
  first = _stream(it, 3)
  assert all(_spec_of(b) == spec for b in first)
  assert all(b["image"].min() >= -1 and b["image"].max() <= 1 for b in first)
  state = it.get_state()
  rest = _stream(it, 2)
  it.close()
  resumed = loader.ShapesInput(**kw)
  resumed.set_state(state)
  _assert_same(_stream(resumed, 2), rest)
  resumed.close()
  it.close()  # Twice is fine.


def test_shapes_processes_hold_consecutive_rows_of_each_global_batch():
  whole = loader.ShapesInput(global_batch=8, image_size=16, process_index=0, process_count=1)
  parts = [loader.ShapesInput(global_batch=8, image_size=16, process_index=p, process_count=2)
           for p in range(2)]
  assert parts[1].element_spec["image"] == ((4, 16, 16, 3), np.float32)
  for _ in range(2):
    w, p0, p1 = next(whole), next(parts[0]), next(parts[1])
    for k in w:
      np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), w[k])
  for it in [whole, *parts]:
    it.close()


def test_a_batch_not_divisible_by_the_processes_is_one_error(shard_dir):
  with pytest.raises(sources.DataError, match="batch_size 10 is not divisible by the 4 processes"):
    loader.ShapesInput(global_batch=10, process_index=0, process_count=4)
  with pytest.raises(sources.DataError, match="batch_size 10 is not divisible by the 4 processes"):
    loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, pp=PP, global_batch=10,
                      process_index=0, process_count=4)
  assert issubclass(sources.DataError, errors.Error) and sources.DataError.exit_code == 2


def test_make_input_draws_shapes_at_the_models_sizes_when_given(shard_dir):
  cfg = ml_collections.ConfigDict(dict(data=dict(name="shapes", seed=0, image_size=None), pp=None,
                                       max_len=12, tokenizer=None, seed=0, num_workers=0))
  it = loader.make_input(cfg, 8, image_size=32, max_len=7)
  assert isinstance(it, loader.ShapesInput)
  assert it.element_spec["image"] == ((8, 32, 32, 3), np.float32)
  assert it.element_spec["labels"] == it.element_spec["region_labels"] == ((8, 7), np.int32)
  assert _spec_of(next(it)) == it.element_spec
  it.close()
  cfg.data.image_size = 24  # A size the source sets itself wins (the trainer then checks it).
  it = loader.make_input(cfg, 8, image_size=32)
  assert it.element_spec["image"] == ((8, 24, 24, 3), np.float32)
  assert it.element_spec["labels"] == ((8, 12), np.int32)
  it.close()
  cfg.data = {"name": "tar", "pattern": str(shard_dir)}
  cfg.pp = PP
  cfg.max_consecutive_skips = 3
  it = loader.make_input(cfg, 8, image_size=32, max_len=12)
  assert isinstance(it, loader.GrainInput) and it.max_consecutive_skips == 3
  it.close()


# --- GrainInput.

def test_grain_element_spec_is_known_without_consuming(shard_dir):
  kw = dict(data={"name": "tar", "pattern": str(shard_dir)}, pp=PP, global_batch=8, seed=3,
            process_index=0, process_count=1)
  probed, fresh = loader.GrainInput(**kw), loader.GrainInput(**kw)
  spec = probed.element_spec
  assert spec == {"image": ((8, 32, 32, 3), np.float32), "labels": ((8, 12), np.int32)}
  assert isinstance(probed, loader.TrainInput) and probed.skipped == 0
  batches = _stream(probed, 6)  # 48 examples: into the second epoch of 40
  _assert_same(batches, _stream(fresh, 6))
  assert all(_spec_of(b) == spec for b in batches)
  probed.close()
  fresh.close()


def test_sources_giving_different_shapes_are_an_error(shard_dir):
  it = loader.GrainInput(data=[{"name": "tar", "pattern": str(shard_dir)},  # 48x64 images
                               {"name": "shapes", "image_size": 32}],
                         pp="decode|choice(inkey='captions',outkey='text')|keep('image','text')",
                         global_batch=8, process_index=0, process_count=1)
  with pytest.raises(sources.DataError, match=r"different shapes.*\(48, 64, 3\).*\(32, 32, 3\)"):
    it.element_spec  # pylint: disable=pointless-statement
  it.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_the_exact_sequence(shard_dir, workers):
  kw = dict(data={"name": "tar", "pattern": str(shard_dir)}, pp=PP, global_batch=8, seed=3,
            num_workers=workers, process_index=0, process_count=1)
  straight = loader.GrainInput(**kw)
  expected = _stream(straight, 9)  # 72 examples: crosses an epoch boundary (40)
  straight.close()
  first = loader.GrainInput(**kw)
  got = _stream(first, 4)
  state = first.get_state()
  first.close()
  resumed = loader.GrainInput(**kw)
  resumed.set_state(state)
  got += _stream(resumed, 5)
  resumed.close()
  _assert_same(expected, got)


def test_resume_with_another_process_count_or_other_shards_is_refused(shard_dir, tmp_path):
  kw = dict(pp="choice(inkey='captions',outkey='text')|keep('text')", global_batch=8)
  it = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, process_index=0,
                         process_count=1, **kw)
  next(it)
  state = it.get_state()
  it.close()
  assert state["process_count"] == 1 and state["examples"] == [40]
  two = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, process_index=0,
                          process_count=2, **kw)
  with pytest.raises(sources.DataError, match="for 1 processes and this run has 2: .*resume with "
                                              "1 processes"):
    two.set_state(state)
  two.close()
  fewer = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir) + "/shards-0000[0-2]"
                                  ".tar"}, process_index=0, process_count=1, **kw)
  with pytest.raises(sources.DataError, match=r"have \[30\] examples and had \[40\] .*shards "
                                              "were added, removed or rewritten"):
    fewer.set_state(state)
  fewer.close()


def _captions_seen(shard_dir, process_index, n_batches):
  return _captions_seen_by(shard_dir, process_index, 2, n_batches)


def _captions_seen_by(shard_dir, process_index, process_count, n_batches):
  it = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)},
                         pp="choice(inkey='captions',outkey='text')|keep('text')", global_batch=8,
                         seed=1, process_index=process_index, process_count=process_count)
  texts = [t for b in _stream(it, n_batches) for t in b["text"]]
  it.close()
  return texts


def test_two_processes_read_disjoint_halves_covering_each_epoch(shard_dir):
  a, b = _captions_seen(shard_dir, 0, 10), _captions_seen(shard_dir, 1, 10)  # 2 epochs of 40
  for epoch in (slice(0, 20), slice(20, 40)):
    assert not set(a[epoch]) & set(b[epoch])
    assert sorted(a[epoch] + b[epoch]) == sorted(f"a photo {i}" for i in range(40))
  assert a[20:] != a[:20]  # reshuffled each epoch
  # The global batches are those of one process reading them all: rows 0-3 of each from
  # process 0, rows 4-7 from process 1.
  one = _captions_seen_by(shard_dir, 0, 1, 10)
  assert one == [t for k in range(10) for t in a[4 * k:4 * k + 4] + b[4 * k:4 * k + 4]]


def test_weighted_mixture(shard_dir):
  it = loader.GrainInput(data=[{"name": "tar", "pattern": str(shard_dir), "weight": 3.0},
                               {"name": "shapes", "image_size": 32, "weight": 1.0}],
                         pp="choice(inkey='captions',outkey='text')|keep('text')", global_batch=40,
                         process_index=0, process_count=1)
  texts = [t for b in _stream(it, 5) for t in b["text"]]
  it.close()
  frac = np.mean([t.startswith("a photo") for t in texts])
  assert 0.65 < frac < 0.85  # 3:1


# --- Bad records: skipped and counted, until a broken pipeline stops.

def test_bad_records_are_skipped_and_counted(tmp_path):
  with tarfile.open(tmp_path / "bad.tar", "w") as tar:
    for i in range(6):
      add_member(tar, f"{i}.jpg", jpeg(i))
      add_member(tar, f"{i}.txt", f"good {i}".encode())
    add_member(tar, "corrupt.jpg", b"\xff\xd8 not a jpeg")
    add_member(tar, "corrupt.txt", b"broken image")
    add_member(tar, "nocaption.jpg", jpeg(7))
    add_member(tar, "noimage.txt", b"caption without image")
  it = loader.GrainInput(data={"name": "tar", "pattern": str(tmp_path / "bad.tar")}, pp=PP,
                         global_batch=6, process_index=0, process_count=1)
  batch = next(it)
  assert batch["image"].shape == (6, 32, 32, 3)
  assert it.skipped == 3
  assert it.get_state()["skipped"] == 3
  it.close()


def test_a_pipeline_that_fails_sometimes_never_stops(tmp_path):
  # Half the records are corrupt: a run of failures is at most 16 long (8 at the end of one
  # epoch, 8 at the start of the next), so a limit of 16 in a row is never passed, while 80
  # failures in all are.
  data = _tar(tmp_path / "half.tar", [i % 2 == 0 for i in range(16)])
  it = loader.GrainInput(data=data, pp=PP, global_batch=8, max_consecutive_skips=16,
                         process_index=0, process_count=1)
  batches = _stream(it, 10)  # the 8 good records of each of 10 epochs
  assert 72 <= it.skipped <= 80 and all(b["image"].shape == (8, 32, 32, 3) for b in batches)
  it.close()
  strict = loader.GrainInput(data=data, pp=PP, global_batch=8, max_consecutive_skips=0,
                             process_index=0, process_count=1)
  with pytest.raises(sources.DataError, match=r"failed on 1 record in a row.*op 'decode' raised "
                                              r"UnidentifiedImageError"):
    _stream(strict, 10)
  strict.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_pipeline_failing_on_every_record_stops_naming_the_op(shard_dir, workers):
  it = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, pp=BROKEN_PP,
                         global_batch=8, num_workers=workers, process_index=0, process_count=1)
  start = time.monotonic()
  try:
    with _deadline(120), pytest.raises(sources.DataError) as e:
      next(it)
  finally:
    it.close()
  message = str(e.value)
  assert "failed on 101 records in a row (config.input.max_consecutive_skips=100)" in message
  assert ("op 'tokenize(max_len=12)' raised KeyError: 'text'; the record had keys "
          "['captions', 'image'] at that op: check its inkey=") in message
  assert it.skipped == 101
  print(f"{workers} workers: stopped after {time.monotonic() - start:.1f} s")


def test_element_spec_of_a_broken_pipeline_is_the_same_error(shard_dir, tmp_path):
  it = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, pp=BROKEN_PP,
                         global_batch=8, max_consecutive_skips=5, process_index=0, process_count=1)
  with pytest.raises(sources.DataError, match=r"failed on 6 records in a row of data source "
                                              r".*'tokenize\(max_len=12\)' raised KeyError"):
    it.element_spec  # pylint: disable=pointless-statement
  it.close()
  data = _tar(tmp_path / "uncaptioned.tar", [True] * 4, caption=False)  # fails before any op
  it = loader.GrainInput(data=data, pp=PP, global_batch=2, process_index=0, process_count=1)
  with pytest.raises(sources.DataError, match=r"all 4 records of this process's part of data "
                                              r"source .*BadRecord: 003: no caption .*"
                                              r"check config.input.data"):
    it.element_spec  # pylint: disable=pointless-statement
  it.close()


def test_trainer_stops_at_start_on_a_broken_pipeline(shard_dir, tmp_path):
  from big_vision_lite import train  # pylint: disable=import-outside-toplevel
  from tests.test_train import CONFIG, TINY  # pylint: disable=import-outside-toplevel
  with _deadline(120), pytest.raises(sources.DataError, match=r"'tokenize\(max_len=12\)'"):
    train.main(["--config", CONFIG, "--workdir", str(tmp_path / "w")] + TINY + [
        f"--config.input.data={{'name': 'tar', 'pattern': '{shard_dir}'}}",
        f"--config.input.pp={BROKEN_PP}"])


def test_trainer_on_a_mixed_shard_trains_and_logs_skipped_records(tmp_path):
  from big_vision_lite import metrics, train  # pylint: disable=import-outside-toplevel
  from tests.test_train import CONFIG, TINY  # pylint: disable=import-outside-toplevel
  with tarfile.open(tmp_path / "data.tar", "w") as tar:
    for i in range(40):
      add_member(tar, f"{i}.jpg", jpeg(i) if i != 5 else b"corrupt")
      add_member(tar, f"{i}.txt", shapes.draw(0, "test", i, image_size=48)["caption"].encode())
  pp = ("decode|resize(32)|value_range(-1,1)|choice(inkey='captions',outkey='text')|"
        "tokenize(max_len=12)|keep('image','labels')")
  train.main(["--config", CONFIG, "--workdir", str(tmp_path / "w")] + TINY + [
      f"--config.input.data={{'name': 'tar', 'pattern': '{tmp_path / 'data.tar'}'}}",
      f"--config.input.pp={pp}", "--config.total_steps=4", "--config.log_training_steps=2",
      "--config.evals={}"])
  rows = metrics.read(str(tmp_path / "w"))
  # 64 good examples span 1.6 epochs of the 40 records: the corrupt one is met once or twice.
  assert rows[-1]["data/skipped"] in (1, 2)
  assert rows[0]["data/skipped"] <= rows[-1]["data/skipped"]
  assert np.isfinite(rows[-1]["train/loss"])


def test_naflex_shapes_batches_draw_one_length_per_step_in_every_process():
  naflex = loader.NaFlex(16, (4, 9), seed=0)
  kw = dict(global_batch=8, image_size=48, aspect=2.0, naflex=naflex)
  whole = loader.ShapesInput(**kw, process_index=0, process_count=1)
  parts = [loader.ShapesInput(**kw, process_index=p, process_count=2) for p in range(2)]
  assert whole.element_spec["image"]["patches"] == ((8, 9, 768), np.dtype(np.float32))
  lengths = []
  for step in range(6):
    batch = next(whole)
    n = naflex.length(step)
    lengths.append(n)
    assert batch["image"]["patches"].shape == (8, n, 768) and batch["labels"].shape[0] == 8
    rows, cols = batch["image"]["yidx"].max(1) + 1, batch["image"]["xidx"].max(1) + 1
    assert (rows * cols == batch["image"]["mask"].sum(1)).all() and (rows * cols <= n).all()
    halves = [next(p) for p in parts]
    for key in ("patches", "mask"):
      np.testing.assert_array_equal(np.concatenate([h["image"][key] for h in halves]),
                                    batch["image"][key])
  assert set(lengths) == {4, 9}
  for it in [whole, *parts]:
    it.close()


def test_naflex_grain_batches_patchify_images_at_their_own_aspect_ratio(shard_dir):
  """64x48 images through an op string that keeps their size: 4:3 patch grids, the length
  drawn per step, and the step in the resumable state."""
  pp = PP.replace("resize(32)|flip_lr|", "")
  naflex = loader.NaFlex(8, (12, 48), seed=1)
  it = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, pp=pp, global_batch=4,
                         naflex=naflex)
  assert it.element_spec["image"]["patches"] == ((4, 48, 192), np.dtype(np.float32))
  for step in range(3):
    batch = next(it)
    n = naflex.length(step)
    image = batch["image"]
    assert image["patches"].shape == (4, n, 192) and batch["labels"].shape == (4, 12)
    rows, cols = image["yidx"].max(1) + 1, image["xidx"].max(1) + 1
    assert (cols * 3 == rows * 4).all() and (image["mask"].sum(1) == rows * cols).all()
  assert it.get_state()["step"] == 3
  it.close()
