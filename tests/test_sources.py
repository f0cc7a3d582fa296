"""Sources (tar shards: patterns, truncation, errors) and the make_shards command."""

import io
import os
import tarfile

import pytest
from PIL import Image

from big_vision_lite.data import loader, shapes, sources
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
