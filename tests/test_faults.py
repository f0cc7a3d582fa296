"""Faults injected into real training runs: non-finite losses, signals, a second trainer, a
damaged checkpoint, a full disk. Each checks that the run stops (or goes on) as documented and
that no good checkpoint is lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import errors, evaluate, lock, metrics, train
from tests.conftest import process_env
from tests.test_train import CONFIG, ROOT, TINY

ENV = dict(os.environ, PYTHONPATH=ROOT)


def _args(workdir, *extra):
  return ["--config", CONFIG, "--workdir", str(workdir)] + TINY + [
      "--config.evals={}", "--config.log_training_steps=2"] + list(extra)


def _strict_rows(workdir):
  """metrics.jsonl parsed with a parser that rejects NaN / Infinity."""
  def reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line, parse_constant=reject) for line in f if line.strip()]


def test_nonfinite_steps_are_never_applied_nor_saved(tmp_path):
  # Ten good steps with checkpoints at 5 and 10; then the same run resumed with a learning rate
  # that blows the parameters up (t = exp(t') overflows): the loss turns non-finite.
  train.main(_args(tmp_path, "--config.total_steps=10", "--config.ckpt_steps=5",
                   "--config.keep_ckpts=1"))
  with pytest.raises(train.NonFiniteLoss) as e:
    train.main(_args(tmp_path, "--config.total_steps=40", "--config.ckpt_steps=5",
                     "--config.keep_ckpts=1", "--config.lr=1e9", "--config.max_nonfinite_steps=4",
                     "--accept_config_changes"))
  message = str(e.value)
  assert e.value.exit_code == 3
  assert "consecutive update steps" in message and "were not applied" in message
  for what in ("loss", "gradient norm", " t ", " b "):
    assert what in message, what
  # Rotation (keep 1) never replaced the last good checkpoint with a non-finite one.
  assert f"last good checkpoint is {tmp_path}/checkpoints/" in message
  steps = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints")).all_steps()
  params = ckpt_lib.restore_params(str(tmp_path / "checkpoints"))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params)), steps
  rows = _strict_rows(tmp_path)  # Strict JSON: non-finite values are null.
  assert any(r.get("train/loss") is None for r in rows)


def test_update_skips_a_nonfinite_batch_and_counts_the_streak():
  from big_vision_lite import sharding  # pylint: disable=import-outside-toplevel
  from big_vision_lite.data import loader  # pylint: disable=import-outside-toplevel
  from tests.test_train import _tiny_config  # pylint: disable=import-outside-toplevel
  cfg = _tiny_config()
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  _, _, init_fn, update, _ = train.build(cfg, mesh, 10)
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=32, max_len=12)
  state = init_fn(jax.random.key(0))
  spec = sharding.batch_sharding(mesh)
  good = next(it)
  bad = {**good, "image": np.where(np.arange(good["image"].shape[0])[:, None, None, None] == 3,
                                   np.nan, good["image"]).astype(np.float32)}
  before = jax.device_get(state)
  state, m = update(state, loader.to_global(bad, spec))
  assert not np.isfinite(float(m["loss"])) and int(state["nonfinite"]) == 1
  after = jax.device_get(state)
  jax.tree.map(np.testing.assert_array_equal, after["params"], before["params"])
  jax.tree.map(np.testing.assert_array_equal, after["opt"], before["opt"])
  assert int(after["step"]) == 1  # The step (and the schedule) moves on.
  state, m = update(state, loader.to_global(bad, spec))
  assert int(state["nonfinite"]) == 2
  state, m = update(state, loader.to_global(good, spec))
  assert np.isfinite(float(m["loss"])) and int(state["nonfinite"]) == 0
  it.close()


def _start(workdir, *extra):
  return subprocess.Popen([sys.executable, "-m", "big_vision_lite.train"] + _args(workdir, *extra),
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(workdir, proc, step: int, timeout: float = 300) -> None:
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and any(r["step"] >= step for r in metrics.read(str(workdir))):
      return
    time.sleep(0.05)
  raise AssertionError(f"the run ended or stalled before step {step}: "
                       f"{proc.communicate()[1][-2000:]}")


def test_sigterm_saves_and_exits_75_and_a_second_trainer_is_refused(tmp_path):
  proc = _start(tmp_path, "--config.total_steps=5000", "--config.ckpt_steps=1000")
  _wait_for_step(tmp_path, proc, 4)
  # A second trainer on the same workdir is refused at start, naming the holder.
  with pytest.raises(lock.LockHeld, match=rf"pid {proc.pid}\b"):
    train.main(_args(tmp_path, "--config.total_steps=5000"))
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 75, err[-2000:]
  stopped = [line for line in err.splitlines() if line.startswith("stopped: ")]
  assert len(stopped) == 1 and "SIGTERM at step" in stopped[0] and "Traceback" not in err
  step = int(stopped[0].split("at step ")[1].split("/")[0])
  assert step < 5000 and f"checkpoints/{step} is saved" in stopped[0]
  assert ckpt_lib.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [step]
  assert not os.path.exists(tmp_path / "lock")  # Released on the way out.
  # The same command resumes from there (a short run to the end).
  resumed = subprocess.run([sys.executable, "-m", "big_vision_lite.train"] +
                           _args(tmp_path, f"--config.total_steps={step + 2}",
                                 "--accept_config_changes"),
                           env=ENV, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0 and f"resumed from {tmp_path}/checkpoints/{step}" in resumed.stdout


def test_sigint_saves_and_a_second_sigint_aborts_at_once(tmp_path):
  proc = _start(tmp_path / "once", "--config.total_steps=5000", "--config.ckpt_steps=1000")
  _wait_for_step(tmp_path / "once", proc, 4)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 75 and "stopped: SIGINT at step" in err and "Traceback" not in err

  # Twice: the second SIGINT ends the process at once, without saving.
  proc = _start(tmp_path / "twice", "--config.total_steps=5000", "--config.ckpt_steps=1000",
                "--config.eval_steps=2", "--config.evals.zeroshot_shape={'type': 'zeroshot', "
                "'dataset': 'shapes_shape', 'num_examples': 4096}")
  _wait_for_step(tmp_path / "twice", proc, 1)
  proc.send_signal(signal.SIGINT)
  time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  proc.communicate(timeout=120)
  assert proc.returncode == -signal.SIGINT


def test_a_damaged_newest_checkpoint_is_skipped_with_one_warning(tmp_path, capsys):
  train.main(_args(tmp_path, "--config.total_steps=6", "--config.ckpt_steps=3"))
  newest = tmp_path / "checkpoints" / "6"
  os.remove(newest / "state" / "_METADATA")
  capsys.readouterr()
  # Standalone evaluation falls back past it as the trainer does (nothing is moved).
  evaluate.main(["--workdir", str(tmp_path)])
  assert json.load(open(tmp_path / "eval" / "3.json"))["checkpoint"].endswith("checkpoints/3")
  out = capsys.readouterr().out
  assert f"warning: checkpoint {newest} is unreadable (state/_METADATA missing)" in out
  train.main(_args(tmp_path, "--config.total_steps=8", "--config.ckpt_steps=3",
                   "--accept_config_changes"))
  out = capsys.readouterr()
  warnings = [line for line in (out.out + out.err).splitlines() if "checkpoint" in line
              and "warning" in line]
  assert len(warnings) == 1 and f"{newest}" in warnings[0], warnings
  assert f"resumed from {tmp_path}/checkpoints/3" in out.out
  assert ckpt_lib.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 8


def test_a_full_disk_stops_the_run_with_a_short_error(tmp_path):
  if shutil.which("unshare") is None:
    pytest.skip("needs unshare(1) to mount a private, small tmpfs")
  disk = tmp_path / "disk"
  disk.mkdir()
  args = " ".join(f"'{a}'" for a in _args(disk / "w", "--config.total_steps=60",
                                            "--config.ckpt_steps=2", "--config.keep_ckpts=50"))
  # A 2.5 MiB filesystem holds a few checkpoints of the tiny model (one device), then fills up.
  script = (f"mount -t tmpfs -o size=2560k tmpfs {disk} && cd {ROOT} && "
            f"{sys.executable} -m big_vision_lite.train {args}; echo EXIT=$?; "
            f"ls {disk}/w/checkpoints")
  env = process_env(1)
  out = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], env=env,
                       capture_output=True, text=True, timeout=300)
  if "EXIT=" not in out.stdout:
    pytest.skip(f"no private tmpfs here: {out.stderr[-300:]}")
  assert "EXIT=4" in out.stdout, out.stderr[-3000:]
  errors_ = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors_) == 1 and "No space left on device" in out.stderr, out.stderr[-3000:]
  assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 4, out.stderr
  saved = [int(s) for s in out.stdout.split("EXIT=4")[1].split() if s.isdigit()]
  assert saved and saved == sorted(saved) and all(s % 2 == 0 for s in saved), out.stdout[-2000:]
  assert issubclass(ckpt_lib.CheckpointWriteError, errors.Error)


def test_bad_inputs_are_clear_errors_before_anything_is_written(tmp_path):
  from big_vision_lite import config as config_lib  # pylint: disable=import-outside-toplevel
  from big_vision_lite.data import ops, sources  # pylint: disable=import-outside-toplevel
  raising, broken = tmp_path / "raising.py", tmp_path / "broken.py"
  raising.write_text("def get_config():\n  c = {'lr': 1e-3}\n  return c['batch_size']\n")
  broken.write_text("def get_config(:\n  return {}\n")
  workdir = tmp_path / "w"
  grain = "--config.input.pp=choice(inkey='captions',outkey='text')|tokenize|keep('image','labels')"
  cases = [
      (["--config", str(raising), "--workdir", str(workdir)], config_lib.ConfigError,
       rf"{raising}:3: get_config raised KeyError: 'batch_size'"),
      (["--config", str(broken), "--workdir", str(workdir)], config_lib.ConfigError,
       rf"{broken}:1: .*syntax error"),
      (["--config", CONFIG + ":foo=1", "--workdir", str(workdir)], config_lib.ConfigError,
       r"siglip_shapes.py takes no argument, but got 'foo=1'.*--config.foo=1"),
      (_args(workdir, "--config.input.pp=resiz(32)|tokenize"), ops.OpStringError,
       r"unknown preprocessing op 'resiz' in 'resiz\(32\)' \(did you mean 'resize'\?\)"),
      (_args(workdir, "--config.input.pp=resize(32, siz=2)"), ops.OpStringError,
       r"bad arguments for preprocessing op 'resize\(32, siz=2\)'.*siz"),
      (_args(workdir, "--config.input.pp=resize(32|tokenize"), ops.OpStringError, "unbalanced"),
      (_args(workdir, grain, f"--config.input.data={{'name': 'tar', 'pattern': "
                             f"'{tmp_path}/none-*.tar'}}"), sources.DataNotFound,
       rf"no tar shards match '{tmp_path}/none-\*.tar'"),
      (_args(workdir, "--config.evals={'z': {'type': 'zeroshot', 'dataset': 'shapes_shap'}}"),
       config_lib.ConfigError, r"config.evals.z: unknown shapes dataset 'shapes_shap' \(did "
                               r"you mean 'shapes_shape'\?\)"),
  ]
  for argv, error, message in cases:
    with pytest.raises(error, match=message):
      train.main(argv)
    assert issubclass(error, errors.Error)  # `error: ...` and exit 2 from the command line.
    assert not workdir.exists() or os.listdir(workdir) == [], (message, os.listdir(workdir))


def test_a_data_position_from_another_kind_of_input_is_a_clear_error():
  from big_vision_lite.data import loader, sources  # pylint: disable=import-outside-toplevel
  shapes_input = loader.ShapesInput(global_batch=4, image_size=16, max_len=8,
                                    process_index=0, process_count=1)
  grain_input = loader.GrainInput(data={"name": "shapes", "image_size": 16},
                                  pp="choice(inkey='captions',outkey='text')|keep('image','text')",
                                  global_batch=4, process_index=0, process_count=1)
  with pytest.raises(sources.DataError, match=r"saved by another kind of input than "
                                              r"config.input now gives \(a grain pipeline"):
    grain_input.set_state(shapes_input.get_state())
  with pytest.raises(sources.DataError, match=r"\(the built-in shapes stream\)"):
    shapes_input.set_state(grain_input.get_state())
  shapes_input.close()
  grain_input.close()


def _catches(pid: int, sig: int) -> bool:
  """Process `pid` has a handler installed for `sig` (/proc: SigCgt)."""
  with open(f"/proc/{pid}/status") as f:
    mask = next(line.split()[1] for line in f if line.startswith("SigCgt:"))
  return bool(int(mask, 16) >> (sig - 1) & 1)


def _signal_when(proc, ready, sig=signal.SIGTERM, timeout: float = 300):
  """Sends `sig` once `ready(line)` holds for a line of stdout, or (`ready` None) once the
  process handles `sig`; returns (stdout, stderr) after it exits."""
  deadline, lines = time.time() + timeout, []
  if ready is None:
    while not _catches(proc.pid, sig) and time.time() < deadline:
      time.sleep(0.005)
  else:
    for line in proc.stdout:
      lines.append(line)
      if ready(line):
        break
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=timeout)
  return "".join(lines) + out, err


def test_a_signal_during_start_up_stops_cleanly_with_75(tmp_path):
  # While the libraries load (the handler is in place within milliseconds of the start),
  # then while the input is being set up: nothing new to save, nothing written, no lock left.
  for moment, ready, phase in (("loading", None, "loading the libraries"),
                               ("input", lambda line: line.startswith("devices:"),
                                "setting up the input")):
    workdir = tmp_path / moment
    proc = _start(workdir, "--config.total_steps=5000")
    _, err = _signal_when(proc, ready)
    assert proc.returncode == 75, err[-2000:]
    assert err.splitlines()[-1] == (f"stopped: SIGTERM during start-up ({phase}); no update step "
                                    "had run, so there was nothing new to save. Run the same "
                                    "command to resume."), err[-2000:]
    assert not workdir.exists() or os.listdir(workdir) == []


_WITH_WORKERS = """
import os, sys, time
from big_vision_lite.data import loader
if __name__ == "__main__":
  it = loader.GrainInput(data={"name": "shapes", "image_size": 16}, global_batch=4, num_workers=1,
                         pp="choice(inkey='captions',outkey='text')|keep('image','text')",
                         process_index=0, process_count=1)
  next(it)
  print("ready", flush=True)
  time.sleep(600)
"""


def _children(pid: int) -> list[int]:
  out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
  return [int(p) for p, pp in (line.split() for line in out.splitlines()) if int(pp) == pid]


def test_input_workers_end_with_their_process_after_kill_9(tmp_path):
  script = tmp_path / "with_workers.py"
  script.write_text(_WITH_WORKERS)
  proc = subprocess.Popen([sys.executable, str(script)], env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  assert proc.stdout.readline().strip() == "ready"
  children = _children(proc.pid)  # The grain worker and multiprocessing's resource tracker.
  assert len(children) == 2, children
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 30
  alive = children
  while alive and time.time() < deadline:
    time.sleep(0.1)
    alive = [c for c in children if os.path.exists(f"/proc/{c}") and
             open(f"/proc/{c}/stat").read().split(") ")[1][0] != "Z"]
  proc.stdout.close()
  for pid in alive:  # Not to leave them behind on this machine either.
    os.kill(pid, signal.SIGKILL)
  assert not alive, f"left behind after kill -9: {alive}"
