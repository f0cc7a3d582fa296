"""Sources (tar shards: patterns, truncation, errors, the shard index, S3) and make_shards."""

import io
import os
import re
import tarfile

import fsspec
import pytest
from PIL import Image

from big_vision_lite.data import loader, shapes, shard_index, sources
from big_vision_lite.tools import make_shards


def jpeg(index, fmt="JPEG"):
  """A 64x48 drawn image, encoded."""
  img = shapes.draw(0, "test", index, image_size=48)["image"]
  buf = io.BytesIO()
  Image.fromarray(img).resize((64, 48)).save(buf, fmt)
  return buf.getvalue()


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  """4 shards x 10 real JPEG/PNG samples; caption = 'a photo N'."""
  out = tmp_path_factory.mktemp("shards")
  samples = [(f"{i:05d}", jpeg(i, "PNG" if i % 5 == 0 else "JPEG"),
              "png" if i % 5 == 0 else "jpg", [f"a photo {i}"]) for i in range(40)]
  make_shards.write_shards(samples, str(out), samples_per_shard=10)
  return out


def add_member(tar, name, data):
  """Adds a file `name` holding `data` to an open tar."""
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def test_patterns(shard_dir):
  d = str(shard_dir)
  assert len(sources.expand_pattern(d)) == 4
  assert len(sources.expand_pattern(d + "/shards-{00001..00002}.tar")) == 2
  assert len(sources.expand_pattern(d + "/shards-*.tar," + d + "/shards-00000.tar")) == 5
  src = sources.TarShards(d + "/shards-{00000..00003}.tar")
  assert len(src) == 40
  rec = src[13]
  assert set(rec) == {"__key__", "jpg", "txt", "json"} and rec["txt"] == b"a photo 13"


def test_clear_errors_for_missing_and_empty(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no tar shards match .*make_shards"):
    sources.TarShards(str(tmp_path / "nothing-{00000..00003}.tar"))
  with tarfile.open(tmp_path / "empty.tar", "w"):
    pass
  with pytest.raises(ValueError, match="contain no samples"):
    sources.TarShards(str(tmp_path / "empty.tar"))
  with pytest.raises(FileNotFoundError, match=r"unknown tfds dataset 'laion'.*'tar', 'shapes'"):
    sources.make_source({"name": "laion", "data_dir": str(tmp_path)})


def _members(path):
  """{name: (header offset, data offset, size)} of a whole tar."""
  with tarfile.open(path) as tar:
    return {m.name: (m.offset, m.offset_data, m.size) for m in tar}


@pytest.mark.parametrize("damage", ["header", "data", "junk_for_header", "no_end_marker"])
def test_truncated_shard_warns_at_start_and_keeps_the_readable_samples(shard_dir, tmp_path, capsys,
                                                                     damage):
  whole = shard_dir / "shards-00000.tar"
  data, members = whole.read_bytes(), _members(whole)
  header, data_start, _ = members["00003.jpg"]  # The first member of the fourth sample.
  damaged = {"header": data[:header + 100],          # inside 00003.jpg's header block
             "data": data[:data_start + 50],         # inside 00003.jpg's bytes
             "junk_for_header": data[:header] + b"\x07junk" * 300,
             "no_end_marker": data[:header]}[damage]
  path = tmp_path / "cut.tar"
  path.write_bytes(damaged)
  it = loader.GrainInput(data={"name": "tar", "pattern": str(path)},
                         pp="choice(inkey='captions',outkey='text')|keep('text')", global_batch=3,
                         process_index=0, process_count=1)
  printed = capsys.readouterr().out
  assert f"warning: {path}: cut short after 3 samples (" in printed
  why = {"header": f"header at byte {header} is cut off", "data": "00003.jpg needs bytes up to",
         "junk_for_header": "neither a member header", "no_end_marker": "no end-of-archive marker"}
  assert why[damage] in printed
  assert sorted(next(it)["text"]) == ["a photo 0", "a photo 1", "a photo 2"] and it.skipped == 0
  it.close()


def test_garbage_after_the_end_of_archive_is_reported(shard_dir, tmp_path):
  path = tmp_path / "appended.tar"
  path.write_bytes((shard_dir / "shards-00000.tar").read_bytes() + b"garbage" * 100)
  src = sources.TarShards(str(path))
  assert len(src) == 10 and len(src.warnings) == 1
  assert "cut short after 10 samples (700 bytes of data at byte" in src.warnings[0]


def test_whole_shards_have_no_warning(shard_dir):
  assert sources.TarShards(str(shard_dir)).warnings == []


def test_make_shards_command(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for i in range(3):
    (images / f"im{i}.png").write_bytes(jpeg(i, "PNG"))
  (tmp_path / "caps.csv").write_text("file,caption\nim0.png,zero\nim1.png,one\nim0.png,nil\n"
                                     "im2.png,two\n")
  make_shards.main(["--images", str(images), "--captions", str(tmp_path / "caps.csv"),
                    "--output", str(tmp_path / "out"), "--samples_per_shard", "2"])
  src = sources.TarShards(str(tmp_path / "out"))
  assert len(src) == 3 and len(src.files) == 2
  assert sources.standardize(src[0])["captions"] == ["zero", "nil"]
  assert not any(f.endswith(".tmp") for f in os.listdir(tmp_path / "out"))


def test_make_shards_skips_images_whose_captions_are_all_empty(tmp_path, capsys):
  images = tmp_path / "images"
  images.mkdir()
  for i in range(8):
    (images / f"im{i}.png").write_bytes(jpeg(i, "PNG"))
  rows = ['{"file": "im0.png", "caption": "zero"}', '{"file": "im1.png", "caption": ""}',
          '{"file": "im2.png", "caption": ["  ", "two\\n  lines "]}',
          '{"file": "im3.png", "caption": [" ", "\\t"]}', '{"file": "im4.png", "caption": null}']
  rows += [f'{{"file": "im{i}.png", "caption": "   "}}' for i in range(5, 8)]
  (tmp_path / "caps.jsonl").write_text("\n".join(rows) + "\n")
  make_shards.main(["--images", str(images), "--captions", str(tmp_path / "caps.jsonl"),
                    "--output", str(tmp_path / "out")])
  printed = capsys.readouterr().out
  assert "skipped 6 images whose captions are all empty: im1.png, im3.png, im4.png, im5.png, " \
         "im6.png, ..." in printed and "wrote 2 samples" in printed
  src = sources.TarShards(str(tmp_path / "out"))
  assert [sources.standardize(src[i])["captions"] for i in range(len(src))] == [
      ["zero"], ["two lines"]]
  (tmp_path / "none.csv").write_text("file,caption\nim1.png, \n")
  with pytest.raises(SystemExit, match="no non-empty captions"):
    make_shards.main(["--images", str(images), "--captions", str(tmp_path / "none.csv"),
                      "--output", str(tmp_path / "out2")])


# --- The shard index: built once, checked, rebuilt; remote shards on a real S3 server.

def _copy_shards(shard_dir, dest):
  dest.mkdir()
  for name in sorted(os.listdir(shard_dir)):
    if name.endswith(".tar"):
      (dest / name).write_bytes((shard_dir / name).read_bytes())
  return dest


def _records(src):
  return [src[i] for i in range(len(src))]


def test_index_is_written_by_make_shards_and_rebuilt_when_stale_or_damaged(shard_dir, tmp_path,
                                                                            capsys):
  assert sorted(os.listdir(shard_dir)) == sorted(
      f"shards-0000{i}.tar{ext}" for i in range(4) for ext in ("", ".idx"))
  reference = _records(sources.TarShards(str(shard_dir)))
  assert [r["txt"] for r in reference] == [f"a photo {i}".encode() for i in range(40)]
  d = _copy_shards(shard_dir, tmp_path / "copy")  # No index: built on first use, beside.
  assert _records(sources.TarShards(str(d))) == reference
  index = d / "shards-00001.tar.idx"
  built = index.read_bytes()
  made = (shard_dir / "shards-00001.tar.idx").read_bytes()
  assert built[:16] + built[24:] == made[:16] + made[24:]  # All but the shard's mtime.
  assert len(built) == 40 + 8 * 11  # Header + 11 offsets: 8 bytes a sample.
  capsys.readouterr()

  index.write_bytes(built[:-3] + b"xyz")  # Damaged: rebuilt with a warning.
  src = sources.TarShards(str(d))
  assert f"the index {index} is damaged (checksum mismatch): indexed again" in src.warnings
  assert index.read_bytes() == built and _records(src) == reference

  # A shard rewritten with one sample more since it was indexed: indexed again.
  shard = d / "shards-00002.tar"
  with tarfile.open(shard, "a") as tar:
    add_member(tar, "extra.jpg", jpeg(99))
    add_member(tar, "extra.txt", b"one more")
  src = sources.TarShards(str(d))
  assert len(src) == 41 and src[30]["txt"] == b"one more"
  name = re.escape(str(shard))
  assert any(re.fullmatch(f"{name} changed since it was indexed \\(indexed at \\d+ bytes "
                          "modified 20.*, now \\d+ bytes modified 20.*\\): indexed again", w)
             for w in src.warnings), src.warnings

  # Changed during a run, same size: the read refuses, naming the shard.
  data = shard.read_bytes()
  shard.write_bytes(data[512:] + bytes(512))
  with pytest.raises(shard_index.ShardError, match=f"{name} changed since it was indexed"):
    src[25]  # pylint: disable=pointless-statement
  shard.unlink()  # Gone during the run.
  with pytest.raises(shard_index.ShardError, match=f"cannot read {name} .*restore the shard"):
    src[25]  # pylint: disable=pointless-statement


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_samples_read_as_tarfile_reads_them_in_every_tar_format(tmp_path, fmt):
  """Plain headers take the fast reader; long and non-ASCII names (GNU long-name and pax
  headers) take tarfile's. Both against tarfile reading the whole archive."""
  names = ["a/00001", "b" * 90 + "/00002", "x" * 120, "caf\u00e9_3", "00004"]
  path = tmp_path / "formats.tar"
  with tarfile.open(path, "w", format=fmt) as tar:
    for i, key in enumerate(names):
      if fmt == tarfile.USTAR_FORMAT and (len(key) > 100 or not key.isascii()):
        continue
      add_member(tar, f"{key}.jpg", jpeg(i))
      add_member(tar, f"{key}.txt", f"caption {i}".encode())
  expected = {}
  with tarfile.open(path) as tar:
    for m in tar:
      key, _, ext = m.name.rpartition("/")[2].partition(".")
      key = m.name.rpartition("/")[0] + "/" + key if "/" in m.name else key
      expected.setdefault(key, {"__key__": key})[ext] = tar.extractfile(m).read()
  src = sources.TarShards(str(path))
  assert not src.warnings and _records(src) == list(expected.values())


def test_memory_is_per_shard_and_offsets_are_cached_within_a_bound(shard_dir):
  src = sources.TarShards(str(shard_dir))
  assert src.cumulative.tolist() == [0, 10, 20, 30, 40] and not vars(src).get("samples")
  src.CACHED_OFFSETS = 15  # Two shards' offsets (11 each) do not fit.
  assert [src.locate(i) for i in (0, 9, 10, 39)] == [(0, 0), (0, 9), (1, 0), (3, 9)]
  assert [src[i]["txt"] for i in (3, 17, 3, 35)] == [b"a photo 3", b"a photo 17", b"a photo 3",
                                                     b"a photo 35"]
  assert list(src._offsets) == [3]  # pylint: disable=protected-access
  with pytest.raises(IndexError):
    src[40]  # pylint: disable=pointless-statement


@pytest.fixture(scope="module")
def s3_shards(shard_dir, s3_endpoint):
  """The 4 shards (without indexes) under s3://bvl-test/shards/ on the loopback S3 server."""
  del s3_endpoint
  fs = fsspec.filesystem("s3", skip_instance_cache=True)
  fs.mkdir("bvl-test")
  for name in sorted(os.listdir(shard_dir)):
    if name.endswith(".tar"):
      fs.pipe_file(f"bvl-test/shards/{name}", (shard_dir / name).read_bytes())
  return "s3://bvl-test/shards"


def test_shards_on_s3_index_once_into_the_cache_and_train_like_local_ones(shard_dir, s3_shards,
                                                                          tmp_path):
  cache = tmp_path / "cache"
  src = sources.TarShards(s3_shards, index_dir=str(cache))
  local = sources.TarShards(str(shard_dir))
  assert src.files == [f"{s3_shards}/shards-0000{i}.tar" for i in range(4)]
  assert _records(src) == _records(local)
  indexes = sorted(os.listdir(cache))
  assert len(indexes) == 4 and all(n.endswith(".tar.idx") for n in indexes)
  stamps = [os.stat(cache / n).st_mtime_ns for n in indexes]
  brace = sources.TarShards(s3_shards + "/shards-{00001..00002}.tar", index_dir=str(cache))
  assert len(brace) == 20 and [os.stat(cache / n).st_mtime_ns for n in indexes] == stamps
  kw = dict(pp="choice(inkey='captions',outkey='text')|keep('text')", global_batch=8, seed=2,
            process_index=1, process_count=2)
  remote_it = loader.GrainInput(data={"name": "tar", "pattern": s3_shards,
                                      "index_dir": str(cache)}, **kw)
  local_it = loader.GrainInput(data={"name": "tar", "pattern": str(shard_dir)}, **kw)
  assert [next(remote_it)["text"].tolist() for _ in range(3)] == [
      next(local_it)["text"].tolist() for _ in range(3)]
  remote_it.close()
  local_it.close()

  # `make_shards --index` writes the indexes beside the shards, in the bucket: a new cache
  # stays empty.
  make_shards.main(["--index", s3_shards + "/shards-*.tar"])
  fs = fsspec.filesystem("s3")
  assert fs.exists("bvl-test/shards/shards-00003.tar.idx")
  assert len(sources.TarShards(s3_shards, index_dir=str(tmp_path / "fresh"))) == 40
  assert not (tmp_path / "fresh").exists()


def test_missing_bucket_or_folder_is_a_clear_error_at_start(s3_shards):
  with pytest.raises(shard_index.ShardError,
                     match=r"cannot list s3://no-such-bucket/shards: FileNotFoundError.*"
                           r"credentials"):
    sources.TarShards("s3://no-such-bucket/shards/shards-{00000..00003}.tar")
  with pytest.raises(FileNotFoundError, match="no tar shards match"):
    sources.TarShards(s3_shards + "/shards-*.tgz")


def test_standardize_reads_regions_from_the_json():
  import json as json_lib  # pylint: disable=import-outside-toplevel
  region = {"box": [0.1, 0.2, 0.5, 0.6], "text": "the red circle"}
  record = {"__key__": "k", "jpg": b"x",
            "json": json_lib.dumps({"caption": "a red circle", "regions": [region]}).encode()}
  out = sources.standardize(record)
  assert out["captions"] == ["a red circle"] and out["regions"] == [region]
  assert "regions" not in sources.standardize({**record, "json": b'{"caption": "c"}'})
  bad = {**record, "json": json_lib.dumps({"caption": "c", "regions": [
      {"box": [0.5, 0.2, 0.1, 0.6], "text": "upside down"}]}).encode()}
  with pytest.raises(sources.BadRecord, match=r"k: bad region .*0 <= y0 <= y1 <= 1"):
    sources.standardize(bad)
