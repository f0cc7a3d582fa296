"""A real two-process job on one machine (CPU collectives over gloo, 2 devices per process)."""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import metrics
from tests.test_train import CONFIG, ROOT, TINY

ARGS = TINY + ["--config.optax.name=sgd", "--config.total_steps=8", "--config.ckpt_steps=4",
               "--config.log_training_steps=4", "--config.eval_steps=8", "--config.keep_ckpts=3"]


def _env(devices: int) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(workdir) -> list[str]:
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "big_vision_lite.train", "--config", CONFIG, "--workdir",
       str(workdir), "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
       "--process_id", str(i)] + ARGS, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _params(workdir, step):
  return ckpt_lib.restore_params(os.path.join(workdir, "checkpoints"), step)


def test_two_processes_equal_one_process_and_resume(tmp_path):
  single = tmp_path / "single"
  subprocess.run([sys.executable, "-m", "big_vision_lite.train", "--config", CONFIG, "--workdir",
                  str(single)] + ARGS, env=_env(4), check=True, capture_output=True)
  multi = tmp_path / "multi"
  outs = _two_processes(multi)
  assert "over 2 process(es)" in outs[0] and "4 x cpu" in outs[0]
  assert "final evaluation" in outs[0] and "final evaluation" not in outs[1]  # process 0 prints
  ref, got = _params(single, 8), _params(multi, 8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, ref)
  rows_single, rows_multi = metrics.read(str(single)), metrics.read(str(multi))
  np.testing.assert_allclose([r["train/loss"] for r in rows_multi],
                             [r["train/loss"] for r in rows_single], rtol=1e-5)
  assert (rows_multi[-1]["zeroshot/shapes_shape/top1"] ==
          rows_single[-1]["zeroshot/shapes_shape/top1"])

  # Drop the final checkpoint: both processes resume from step 4, which both wrote.
  shutil.rmtree(multi / "checkpoints" / "8")
  outs = _two_processes(multi)
  assert "resumed from" in outs[0]
  jax.tree.map(np.testing.assert_array_equal, _params(multi, 8), got)
