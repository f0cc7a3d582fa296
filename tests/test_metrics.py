"""metrics.py: the JSONL/TensorBoard writer (strict JSON, resume), throughput, peak FLOP/s, MFU."""

import glob
import json
import math
import os
import struct

import jax
import pytest
from tensorboardX.proto import event_pb2

from big_vision_lite import errors, metrics


def _strict_rows(path):
  """Parses every line with a JSON parser that rejects NaN and Infinity."""
  def reject(name):
    raise ValueError(f"non-standard JSON constant {name}")
  with open(path) as f:
    return [json.loads(line, parse_constant=reject) for line in f]


def _events(workdir):
  """(step, tag or 'purge', value) of every TensorBoard event file, in order."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at < len(data):  # TFRecord: length, its crc, the record, its crc.
      (length,) = struct.unpack("<Q", data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      if event.HasField("session_log"):
        out.append((event.step, "purge", None))
      for value in event.summary.value:
        out.append((event.step, value.tag, value.simple_value))
  return out


def test_rows_are_strict_json_with_non_finite_values_as_null(tmp_path):
  writer = metrics.Writer(str(tmp_path))
  writer.write(1, {"train/loss": 2.5, "train/lr": jax.numpy.float32(0.1), "data/skipped": 3})
  writer.write(2, {"train/loss": float("nan"), "train/grad_norm": float("inf"),
                   "train/t": -math.inf, "eval/per_class": [0.5, float("nan")]})
  writer.close()
  rows = _strict_rows(tmp_path / "metrics.jsonl")
  assert rows[0] == {"step": 1, "train/loss": 2.5, "train/lr": pytest.approx(0.1),
                     "data/skipped": 3}
  assert rows[1] == {"step": 2, "train/loss": None, "train/grad_norm": None, "train/t": None,
                     "eval/per_class": [0.5, None]}
  read = metrics.read(str(tmp_path))  # Readers get NaN back.
  assert math.isnan(read[1]["train/loss"]) and math.isnan(read[1]["eval/per_class"][1])
  # TensorBoard keeps the floats themselves.
  logged = {(step, tag): value for step, tag, value in _events(tmp_path) if tag != "purge"}
  assert logged[(1, "train/loss")] == 2.5 and math.isnan(logged[(2, "train/loss")])
  assert logged[(2, "train/grad_norm")] == math.inf


def test_resume_drops_rows_after_the_restored_step(tmp_path):
  writer = metrics.Writer(str(tmp_path))
  for step in (1, 2, 3, 4):
    writer.write(step, {"train/loss": float(step) if step != 2 else float("nan")})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "train/lo')  # A killed run's last line, cut short.

  writer = metrics.Writer(str(tmp_path), resume_step=2)
  writer.write(3, {"train/loss": 30.0})
  writer.close()
  rows = _strict_rows(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1.0), (2, None), (3, 30.0)]
  # TensorBoard is told to hide the old run's events after step 2.
  events = _events(tmp_path)
  assert (3, "purge", None) in events
  assert events[-1] == (3, "train/loss", 30.0)


def test_a_damaged_row_before_the_last_is_an_error_naming_the_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
  with pytest.raises(errors.Error, match=r"metrics.jsonl:2 is not valid JSON"):
    metrics.Writer(str(tmp_path), resume_step=3, tensorboard=False)


def test_only_process_0_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  writer = metrics.Writer(str(tmp_path / "w"))
  writer.write(1, {"train/loss": 1.0})
  writer.close()
  assert not os.path.exists(tmp_path / "w")


def test_throughput_excludes_paused_time(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
  clock = metrics.Throughput(batch_size=64, start_step=10, total_steps=110)
  now[0] += 3.0  # 10 steps in 2 s of training plus 1 s of checkpointing.
  with clock.paused():
    now[0] += 1.0
  out = clock.measure(20)
  assert out["img_per_sec"] == pytest.approx(10 * 64 / 3.0)
  assert out["step_time"] == pytest.approx(0.3)
  assert out["eta_sec"] == pytest.approx(90 * 0.3)
  assert out["img_per_sec_per_device"] == pytest.approx(10 * 64 / 3.0 / jax.device_count())
  now[0] += 1.0  # The next measurement covers only the steps since the last one.
  assert clock.measure(25)["step_time"] == pytest.approx(0.2)


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA A100-SXM4-40GB", 312e12), ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", None), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v4", 275e12),
    ("TPU v6 lite", 918e12), ("cpu", None)])
def test_peak_flops_by_device_kind(kind, peak):
  assert metrics.peak_flops(kind) == peak


def test_utilisation():
  # 8e15 FLOPs per step over 4 devices in 10 s: 200 TFLOP/s per device.
  out = metrics.utilisation(8e15, 10.0, 4, 989e12)
  assert out["tflops_per_device"] == pytest.approx(200.0)
  assert out["mfu"] == pytest.approx(200e12 / 989e12)
  assert metrics.utilisation(8e15, 10.0, 4, None) == {"tflops_per_device": pytest.approx(200.0)}


def test_format_duration():
  assert [metrics.format_duration(s) for s in (4.4, 75, 3600 * 2 + 61)] == ["4s", "1m15s", "2h01m"]


def test_resume_from_step_0_hides_the_old_events_from_step_1(tmp_path):
  writer = metrics.Writer(str(tmp_path))
  writer.write(1, {"train/loss": 1.0})
  writer.close()
  writer = metrics.Writer(str(tmp_path), resume_step=0)  # The crashed run had no checkpoint.
  writer.write(1, {"train/loss": 2.0})
  writer.close()
  events = _events(tmp_path)
  # TensorBoard shows step 1 once, the new one: the last start hides what came before.
  purge = max(i for i, e in enumerate(events) if e == (1, "purge", None))
  assert [e for e in events[purge:] if e[1] == "train/loss"] == [(1, "train/loss", 2.0)]
  assert [r["train/loss"] for r in metrics.read(str(tmp_path))] == [2.0]


def test_a_full_disk_while_writing_metrics_is_the_exit_4_error(tmp_path):
  if not os.path.exists("/dev/full"):
    pytest.skip("needs /dev/full")
  writer = metrics.Writer(str(tmp_path), tensorboard=False)
  writer.write(1, {"train/loss": 1.0})
  os.remove(tmp_path / "metrics.jsonl")
  os.symlink("/dev/full", tmp_path / "metrics.jsonl")  # Every write: ENOSPC.
  with pytest.raises(metrics.MetricsWriteError) as e:
    writer.write(2, {"train/loss": 2.0})
  assert e.value.exit_code == 4
  assert f"metrics could not be written to {tmp_path} (step 2): No space left on device " \
         "(errno 28)" in str(e.value) and "run the same command to resume" in str(e.value)
