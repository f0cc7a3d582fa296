"""A real two-process job on one machine (CPU collectives over gloo, 2 devices per process)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import metrics
from tests.conftest import free_port, process_env
from tests.test_train import CONFIG, TINY, tar_input

# Two evaluators: labels (zero-shot) and caption strings (retrieval) gathered over processes.
EVALS = ("--config.evals={'zeroshot_shape': {'type': 'zeroshot', 'dataset': 'shapes_shape', "
         "'num_examples': 24}, 'retrieval': {'type': 'retrieval', 'dataset': 'shapes', "
         "'num_examples': 24}}")
ARGS = TINY + [EVALS, "--config.optax.name=sgd", "--config.total_steps=8", "--config.ckpt_steps=4",
               "--config.log_training_steps=4", "--config.eval_steps=8", "--config.keep_ckpts=3"]


def _two_processes(workdir, module="big_vision_lite.train", args=("--config", CONFIG, *ARGS)):
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", module, "--workdir", str(workdir), "--coordinator_address",
       f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i), *args],
      env=process_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _params(workdir, step):
  return ckpt_lib.restore_params(os.path.join(workdir, "checkpoints"), step)


def test_two_processes_equal_one_process_and_resume(tmp_path):
  """Training on tar shards (indexed at start by both processes at once): the two processes
  read disjoint rows of the same global batches as one process does."""
  args = ("--config", CONFIG, *ARGS, *tar_input(tmp_path / "shards"))
  single = tmp_path / "single"
  subprocess.run([sys.executable, "-m", "big_vision_lite.train", "--workdir", str(single), *args],
                 env=process_env(4), check=True, capture_output=True)
  for name in os.listdir(tmp_path / "shards"):
    if name.endswith(".idx"):
      os.remove(tmp_path / "shards" / name)
  multi = tmp_path / "multi"
  outs = _two_processes(multi, args=args)
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
  outs = _two_processes(multi, args=args)
  assert "resumed from" in outs[0]
  jax.tree.map(np.testing.assert_array_equal, _params(multi, 8), got)

  # Standalone evaluation of the final checkpoint: one process with 4 devices, then two
  # processes with 2 each. 24 examples per set in global batches of 16 (8 rows per process):
  # every process pads its last batch. Both reproduce the in-training figures exactly.
  trained = {k: v for k, v in metrics.read(str(multi))[-1].items() if "/" in k
             and not k.startswith(("train/", "data/"))}
  subprocess.run([sys.executable, "-m", "big_vision_lite.evaluate", "--workdir", str(multi),
                  "--export_embeddings"], env=process_env(4), check=True, capture_output=True)
  single_eval = json.load(open(multi / "eval" / "8.json"))["metrics"]
  single_emb = _exports(multi)
  shutil.rmtree(multi / "embeddings")
  _two_processes(multi, "big_vision_lite.evaluate", ("--export_embeddings",))
  multi_eval = json.load(open(multi / "eval" / "8.json"))["metrics"]
  assert multi_eval == single_eval == trained
  multi_emb = _exports(multi)
  assert multi_emb.keys() == single_emb.keys()
  for key, value in multi_emb.items():
    if value.dtype.kind == "f":
      np.testing.assert_allclose(value, single_emb[key], rtol=1e-5, atol=1e-6, err_msg=key)
    else:  # Labels, caption owners, caption strings, class names.
      np.testing.assert_array_equal(value, single_emb[key], err_msg=key)
  assert multi_emb["zeroshot_shape/image_embeddings"].shape[0] == 24  # Each example once.
  assert multi_emb["retrieval/image_embeddings"].shape[0] == 24
  assert len(multi_emb["retrieval/caption_image"]) == len(multi_emb["retrieval/text_embeddings"])
  np.testing.assert_array_equal(np.unique(multi_emb["retrieval/caption_image"]), np.arange(24))


def _exports(workdir) -> dict[str, np.ndarray]:
  root = workdir / "embeddings" / "8"
  return {f"{d}/{f[:-4]}": np.load(root / d / f) for d in os.listdir(root)
          for f in os.listdir(root / d) if f != "preview_images.npy"}


def test_sigterm_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(tmp_path):
  """Preemption notice to process 1 only: JAX's preemption service spreads it, both processes
  save the same step, exit 75, and the job resumes from that checkpoint."""
  port = free_port()
  args = ["--config", CONFIG, *ARGS, "--config.total_steps=5000", "--config.ckpt_steps=1000",
          "--config.evals={}", "--config.log_training_steps=2"]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "big_vision_lite.train", "--workdir", str(tmp_path),
       "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id",
       str(i), *args], env=process_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if (tmp_path / "metrics.jsonl").exists() and any(
        r["step"] >= 4 for r in metrics.read(str(tmp_path))):
      break
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [75, 75], [o[-2000:] for o in outs]
  steps = {int(re.search(r"stopped: SIGTERM at step (\d+)/", o).group(1)) for o in outs}
  assert len(steps) == 1, outs  # Both processes stopped at the same step.
  step = steps.pop()
  assert ckpt_lib.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [step]
  resumed = _two_processes(tmp_path, args=("--config", CONFIG, *ARGS, "--config.evals={}",
                                           f"--config.total_steps={step + 2}",
                                           "--accept_config_changes"))
  assert f"resumed from {tmp_path}/checkpoints/{step}" in resumed[0]
