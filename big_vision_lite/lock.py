"""One trainer per workdir: WORKDIR/lock, created atomically, names the run that holds it.

  with lock.hold(workdir):
    ...  # train

The file holds JSON: host, pid, the process's start time (so that a reused pid is not taken
for the holder), command, SLURM job id (if any) and when the lock was taken. A second trainer
on the same workdir stops at start with LockHeld naming the holder. A lock whose holder is
gone (same host: no such pid, or a pid now used by a process that started at another time) is
taken over with a one-line warning; that is what a `kill -9` leaves. A lock taken on another
host cannot be checked from here and is never taken over. In a multi-process job only process
0 takes the lock and every process learns its outcome, so all of them stop together.
"""

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import time
from typing import Any, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_vision_lite import errors

LOCK_FILE = "lock"


class LockHeld(errors.Error):
  """Another trainer holds the workdir (or its lock cannot be checked)."""

  exit_code = 2


class Lock:
  """A held workdir lock; `release()` removes the file if it is still ours."""

  def __init__(self, path: str, content: bytes | None):
    self.path, self._content = path, content  # content None: held by process 0 of this job.

  def release(self) -> None:
    if self._content is None:
      return
    try:
      with open(self.path, "rb") as f:
        ours = f.read() == self._content
      if ours:
        os.remove(self.path)
    except FileNotFoundError:
      pass
    self._content = None

  def __enter__(self) -> "Lock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def acquire(workdir: str) -> Lock:
  """Takes WORKDIR/lock for this job (process 0 takes it, every process gets the outcome);
  raises LockHeld, naming the holder, if another live trainer has it."""
  path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
  refusal, lock = "", None
  if jax.process_index() == 0:
    try:
      lock = _acquire_here(path)
    except LockHeld as e:
      refusal = str(e)
    except OSError as e:  # Told to every process too: none may wait for process 0 in vain.
      refusal = f"cannot create {path}: {e}"
  if jax.process_count() > 1:
    refusal = _broadcast_text(refusal)
  if refusal:
    raise LockHeld(refusal)
  return lock or Lock(path, None)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[Lock]:
  """`with hold(workdir):` the lock is held inside the block and released however it ends."""
  lock = acquire(workdir)
  try:
    yield lock
  finally:
    lock.release()


def _acquire_here(path: str) -> Lock:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  content = (json.dumps(holder_info(), indent=1) + "\n").encode()
  for _ in range(5):  # Retried only when another process changes the file meanwhile.
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      seen, holder = _read_holder(path)
      if seen is None:
        continue  # Released meanwhile.
      stale = _why_stale(holder, path)
      if _break(path, seen):
        print(f"warning: taking over {path}: {stale}", flush=True)
      continue
    try:
      os.write(fd, content)
    except OSError:
      os.close(fd)
      os.remove(path)
      raise
    os.close(fd)
    return Lock(path, content)
  raise LockHeld(f"could not take {path}: other processes keep changing it; is another "
                 "trainer starting on this workdir?")


def holder_info() -> dict[str, Any]:
  """What the lock file records about this process."""
  pid = os.getpid()
  info = {"host": socket.gethostname(), "pid": pid, "start_ticks": _start_ticks(pid),
          "started": _started_at(pid), "command": shlex.join(sys.argv),
          "acquired": datetime.datetime.now().isoformat(timespec="seconds")}
  if os.environ.get("SLURM_JOB_ID"):
    info["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
  return info


def _read_holder(path: str) -> tuple[bytes | None, dict[str, Any]]:
  """(raw bytes, parsed JSON) of the lock file; (None, {}) if it is gone. A holder writes its
  JSON right after creating the file, so an empty or partial file is given a moment."""
  for attempt in range(10):
    try:
      with open(path, "rb") as f:
        raw = f.read()
    except FileNotFoundError:
      return None, {}
    try:
      holder = json.loads(raw)
      if isinstance(holder, dict):
        return raw, holder
    except ValueError:
      pass
    if attempt < 9:
      time.sleep(0.1)
  raise LockHeld(f"{path} exists but is not a readable lock ({raw[:80]!r}). If no trainer is "
                 f"running on this workdir, delete {path} and start again.")


def _why_stale(holder: dict[str, Any], path: str) -> str:
  """Why the holder is known to be gone; raises LockHeld if it may be alive."""
  desc = _describe(holder)
  if holder.get("host") != socket.gethostname():
    raise LockHeld(
        f"workdir {os.path.dirname(path)} is locked by a trainer on another host: {desc}. It "
        f"cannot be checked from {socket.gethostname()}; if that run is dead, delete {path} "
        "and start again.")
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    raise LockHeld(f"{path} names no process ({desc}); if no trainer is running on this "
                   "workdir, delete it and start again.")
  if not _pid_exists(pid):
    return f"its holder ({desc}) is gone"
  now = _start_ticks(pid)
  if holder.get("start_ticks") is not None and now is not None and now != holder["start_ticks"]:
    return f"its holder ({desc}) is gone; pid {pid} now belongs to another process"
  if pid == os.getpid():
    raise LockHeld(f"{path} is already held by this process; release it first")
  raise LockHeld(f"workdir {os.path.dirname(path)} is in use by another trainer: {desc}. Wait "
                 f"for it to finish or stop it (kill {pid}); two trainers on one workdir "
                 "corrupt each other's checkpoints and metrics.")


def _break(path: str, seen: bytes) -> bool:
  """Removes the stale lock `seen`, unless another process replaced it meanwhile (then it is
  put back). True if it was removed."""
  aside = f"{path}.stale.{os.getpid()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return False
  with open(aside, "rb") as f:
    same = f.read() == seen
  if not same:
    with contextlib.suppress(FileExistsError):
      os.link(aside, path)  # Never overwrites: a lock created meanwhile stays.
  os.remove(aside)
  return same


def _describe(holder: dict[str, Any]) -> str:
  parts = [f"pid {holder.get('pid')} on {holder.get('host')}",
           f"started {holder.get('started') or 'at an unknown time'}"]
  if holder.get("slurm_job_id"):
    parts.append(f"SLURM job {holder['slurm_job_id']}")
  if holder.get("command"):
    command = holder["command"]
    parts.append(f"command: {command if len(command) < 120 else command[:117] + '...'}")
  return ", ".join(parts)


def _pid_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Alive, another user's.
  return True


def _start_ticks(pid: int) -> int | None:
  """The process's start time in clock ticks since boot (Linux /proc), or None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # Field 22; the command name (field 2) may hold spaces and parentheses, so count after ')'.
  return int(stat.rsplit(")", 1)[1].split()[19])


def _started_at(pid: int) -> str | None:
  ticks = _start_ticks(pid)
  try:
    with open("/proc/stat") as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
  except (OSError, StopIteration):
    return None
  if ticks is None:
    return None
  when = boot + ticks / os.sysconf("SC_CLK_TCK")
  return datetime.datetime.fromtimestamp(when).isoformat(timespec="seconds")


def _broadcast_text(text: str, size: int = 2048) -> str:
  """Process 0's `text` on every process."""
  buf = np.zeros(size, np.uint8)
  raw = text.encode()[:size]
  buf[:len(raw)] = np.frombuffer(raw, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return bytes(out[out != 0]).decode(errors="replace")
