"""The workdir lock, with real second processes: held, killed with -9, a reused pid, another host,
and a two-process job that must stop on every process together."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from big_vision_lite import errors, lock
from tests.conftest import free_port, process_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = """
import sys
from big_vision_lite import lock
with lock.hold(sys.argv[1]):
  print("held", flush=True)
  sys.stdin.read()  # Until the test closes stdin (or kills this process).
"""


def _holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  assert proc.stdout.readline().strip() == "held"
  return proc


def _write_lock(workdir, **changes):
  info = {**lock.holder_info(), **changes}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "lock"), "w") as f:
    json.dump(info, f)
  return info


def test_a_second_trainer_is_refused_with_the_holder_named(tmp_path):
  proc = _holder(tmp_path)
  try:
    with pytest.raises(lock.LockHeld) as e:
      lock.acquire(str(tmp_path))
    message = str(e.value)
    assert isinstance(e.value, errors.Error) and e.value.exit_code == 2
    assert f"workdir {tmp_path} is in use by another trainer: pid {proc.pid} on " \
           f"{socket.gethostname()}, started 20" in message
    assert f"kill {proc.pid}" in message and len(message.splitlines()) == 1
  finally:
    proc.stdin.close()  # The holder leaves its `with` block normally: the lock goes with it.
    assert proc.wait(timeout=60) == 0
  assert not os.path.exists(tmp_path / "lock")
  with lock.hold(str(tmp_path)):
    assert json.load(open(tmp_path / "lock"))["pid"] == os.getpid()
  assert not os.path.exists(tmp_path / "lock")


def test_the_lock_of_a_killed_trainer_is_taken_over_with_a_warning(tmp_path, capsys):
  proc = _holder(tmp_path)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert json.load(open(tmp_path / "lock"))["pid"] == proc.pid  # kill -9 leaves it behind.
  with lock.hold(str(tmp_path)):
    assert json.load(open(tmp_path / "lock"))["pid"] == os.getpid()
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 1
  assert out[0].startswith(f"warning: taking over {tmp_path}/lock: its holder (pid {proc.pid} on")
  assert out[0].endswith(") is gone")


def test_a_reused_pid_is_taken_over(tmp_path, capsys):
  # This process is alive, but it is not the process that took the lock: that one started
  # at another time and is gone.
  _write_lock(tmp_path, start_ticks=lock.holder_info()["start_ticks"] - 100)
  with lock.hold(str(tmp_path)):
    pass
  assert f"pid {os.getpid()} now belongs to another process" in capsys.readouterr().out


def test_the_lock_of_another_host_is_refused(tmp_path):
  _write_lock(tmp_path, host="node-17.cluster", pid=4242, slurm_job_id="99")
  with pytest.raises(lock.LockHeld) as e:
    lock.acquire(str(tmp_path))
  message = str(e.value)
  assert "locked by a trainer on another host: pid 4242 on node-17.cluster" in message
  assert "SLURM job 99" in message and f"delete {tmp_path}/lock" in message
  assert os.path.exists(tmp_path / "lock")  # Never taken over.


def test_a_garbled_lock_file_is_refused(tmp_path):
  (tmp_path / "lock").write_text("{\"host\": ")
  with pytest.raises(lock.LockHeld, match=rf"{tmp_path}/lock exists but is not a readable lock"):
    lock.acquire(str(tmp_path))


def test_released_on_errors_and_records_the_holder(tmp_path, monkeypatch):
  monkeypatch.setenv("SLURM_JOB_ID", "1234")
  with pytest.raises(ValueError):
    with lock.hold(str(tmp_path / "w")):  # Creates the workdir.
      info = json.load(open(tmp_path / "w" / "lock"))
      raise ValueError("the run failed")
  assert not os.path.exists(tmp_path / "w" / "lock")
  assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
  assert info["slurm_job_id"] == "1234" and info["start_ticks"] > 0
  assert info["command"] and info["acquired"] and info["started"]
  # A lock file that is no longer ours (replaced by hand) is left alone.
  held = lock.acquire(str(tmp_path))
  _write_lock(tmp_path, pid=1)
  held.release()
  assert json.load(open(tmp_path / "lock"))["pid"] == 1


TWO_PROCESS_SCRIPT = """
import sys
from big_vision_lite import distributed, lock
workdir, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
distributed.initialize(f"127.0.0.1:{port}", 2, pid)
try:
  with lock.hold(workdir):
    print("RESULT held", flush=True)
except lock.LockHeld as e:
  print("RESULT refused: " + str(e), flush=True)
"""


def test_every_process_of_a_job_gets_the_outcome(tmp_path):
  script = tmp_path / "job.py"
  script.write_text(TWO_PROCESS_SCRIPT)

  def job():
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "w"), str(port), str(i)],
        env=process_env(1),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [out.split("RESULT ", 1)[1].strip() for out in outs]

  with lock.hold(str(tmp_path / "w")):  # Held by this (live) process: both must refuse.
    refused = job()
  assert refused[0] == refused[1] and refused[0].startswith(
      f"refused: workdir {tmp_path}/w is in use by another trainer: pid {os.getpid()}")
  assert job() == ["held", "held"]  # Free: process 0 takes it for the job.
  assert not os.path.exists(tmp_path / "w" / "lock")
