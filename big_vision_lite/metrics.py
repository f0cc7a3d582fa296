"""Metric writers (stdout, JSONL, TensorBoard) and throughput/ETA tracking.

Only process 0 writes files. On resume from step S, entries after S left by the interrupted run
are dropped from metrics.jsonl (and purged by TensorBoard), so the file reads as one run.
metrics.jsonl is strict JSON, one object per line: a NaN or infinite value is written as null
(TensorBoard keeps the float), and `read` gives it back as NaN.
"""

import contextlib
import json
import logging
import math
import os
import re
import time
from typing import Any

import jax
import numpy as np

from big_vision_lite import errors


def _scalar(v: Any) -> float | int | list:
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


def _finite_or_none(v: Any) -> Any:
  """NaN and +-inf (also inside lists) -> None, which JSON writes as null."""
  if isinstance(v, float) and not math.isfinite(v):
    return None
  if isinstance(v, list):
    return [_finite_or_none(x) for x in v]
  return v


def _json_line(row: dict[str, Any]) -> str:
  return json.dumps({k: _finite_or_none(v) for k, v in row.items()}, allow_nan=False) + "\n"


def _parse_rows(path: str) -> list[dict[str, Any]]:
  """The rows of a metrics.jsonl; a last line cut short by a killed run is left out."""
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if i < len(lines) - 1:
        raise errors.Error(f"{path}:{i + 1} is not valid JSON ({line[:60]!r}...): repair or "
                           "delete that line") from None
  return rows


class MetricsWriteError(errors.Error):
  """metrics.jsonl or the TensorBoard events could not be written (e.g. the disk is full)."""

  exit_code = 4  # As a checkpoint that could not be written.


class Writer:
  """Appends `{'step': s, **metrics}` lines to DIR/metrics.jsonl and to TensorBoard. A failed
  write (a full disk) is a MetricsWriteError."""

  def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if not self.enabled:
      return
    self.workdir = workdir
    with self._reporting(f"resuming from step {resume_step}"):
      os.makedirs(workdir, exist_ok=True)
      if os.path.exists(self.path):
        kept = [row for row in _parse_rows(self.path) if row["step"] <= resume_step]
        with open(self.path + ".tmp", "w") as f:
          f.writelines(_json_line(row) for row in kept)
        os.replace(self.path + ".tmp", self.path)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        # A non-finite value is logged as such (and reported by the trainer); tensorboardX
        # would also warn once per value.
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
        # Events after the resumed step (step 1 too, when resuming from step 0) are hidden.
        self.tb = SummaryWriter(workdir, purge_step=resume_step + 1)

  @contextlib.contextmanager
  def _reporting(self, what: str):
    try:
      yield
    except OSError as e:
      from big_vision_lite import checkpoint  # pylint: disable=import-outside-toplevel
      raise MetricsWriteError(
          f"metrics could not be written to {self.workdir} ({what}): "
          f"{checkpoint.write_failure(e, self.workdir)}.\nThe checkpoints already saved are "
          "intact: make room, then run the same command to resume.") from None

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    with self._reporting(f"step {step}"):
      with open(self.path, "a") as f:
        f.write(_json_line(row))
      if self.tb is not None:
        for k, v in row.items():
          if k != "step" and isinstance(v, (int, float)):
            self.tb.add_scalar(k, v, step)
        self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      with self._reporting("closing"):
        self.tb.close()


def read(workdir: str) -> list[dict[str, Any]]:
  """All rows of DIR/metrics.jsonl, with null values as NaN."""
  nan = lambda v: math.nan if v is None else [nan(x) for x in v] if isinstance(v, list) else v
  return [{k: nan(v) for k, v in row.items()}
          for row in _parse_rows(os.path.join(workdir, "metrics.jsonl"))]


class Throughput:
  """Images/s over the steps since the last call, excluding time spent in `paused()` blocks."""

  def __init__(self, batch_size: int, start_step: int, total_steps: int):
    self.batch_size, self.total_steps = batch_size, total_steps
    self.last_step, self.last_time, self.excluded = start_step, time.perf_counter(), 0.0

  def paused(self):
    tracker = self

    class _Pause:
      def __enter__(self):
        self.t0 = time.perf_counter()

      def __exit__(self, *exc):
        tracker.excluded += time.perf_counter() - self.t0

    return _Pause()

  def measure(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self.last_time - self.excluded, 1e-9)
    steps = step - self.last_step
    self.last_step, self.last_time, self.excluded = step, now, 0.0
    step_time = elapsed / max(steps, 1)
    return {"img_per_sec": steps * self.batch_size / elapsed,
            "img_per_sec_per_device": steps * self.batch_size / elapsed / jax.device_count(),
            "step_time": step_time, "eta_sec": step_time * (self.total_steps - step)}


# Peak dense bfloat16 FLOP/s per chip (vendor figures, without sparsity), by device_kind substring.
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12,
    "TPU v6": 918e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v4": 275e12, "TPU v3": 123e12,
}


def peak_flops(device_kind: str) -> float | None:
  """Peak bf16 FLOP/s of one device from its `device_kind`, or None if unknown (e.g. CPU)."""
  for name, flops in PEAK_BF16_FLOPS.items():
    # Not followed by a digit: 'L4' is not the 'L40S'.
    if re.search(re.escape(name) + r"(?!\d)", device_kind, re.IGNORECASE):
      return flops
  return None


def utilisation(flops_per_step: float, step_time: float, num_devices: int,
                peak_per_device: float | None) -> dict[str, float]:
  """Achieved TFLOP/s per device and, when the peak is known, model FLOPs utilisation."""
  achieved = flops_per_step / step_time / num_devices
  out = {"tflops_per_device": achieved / 1e12}
  if peak_per_device:
    out["mfu"] = achieved / peak_per_device
  return out


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def compiled_memory(compiled) -> int:
  """Bytes per device a compiled XLA program needs at its peak (XLA's memory analysis):
  arguments + outputs (less what donation aliases) + temporaries."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)
