"""Running a sweep's runs on this machine: N at a time, each on its share of the devices.

Each run is one trainer process (`python -m big_vision_lite.train`) on DIR/<run>/, with its
output appended to DIR/<run>/log.txt. With `parallel` > 1 the machine is split: GPUs by
CUDA_VISIBLE_DEVICES, CPU cores by pinning each process to its cores (os.sched_setaffinity) and
capping its thread pools to as many threads. A run that fails is reported with its log and the
others go on; a run stopped by a signal (exit 75) is unfinished, and the next invocation
resumes it from its checkpoint. Runs share a JAX compilation cache (DIR/jax_cache, unless
JAX_COMPILATION_CACHE_DIR is set), so runs that differ only in their seeds compile once. The
runner itself stops cleanly on SIGINT/SIGTERM (its runs
save and exit 75), and its runs get SIGTERM if it dies; the next invocation then records their
attempts (DIR/<run>/attempt.json marks one under way), waiting for them to end.
"""

import ctypes
import dataclasses
import datetime
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from big_vision_lite import interrupt, metrics
from big_vision_lite import sweep as sweep_lib

# Threads of the libraries that size their pools by the machine, not by the affinity mask.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_PR_SET_PDEATHSIG = 1
_HEARTBEAT_SEC = 60.0


@dataclasses.dataclass(frozen=True)
class Slot:
  """One run's share of the machine: CPU cores to pin it to, or GPUs to show it (empty: the
  whole machine)."""

  index: int
  cores: tuple[int, ...] = ()
  gpus: tuple[str, ...] = ()

  def describe(self) -> str:
    if self.gpus:
      return f"GPU {','.join(self.gpus)}"
    if self.cores:
      return f"core{'s' if len(self.cores) > 1 else ''} {','.join(map(str, self.cores))}"
    return "all devices"

  def env(self) -> dict[str, str]:
    """Environment variables that confine a process to this slot."""
    if self.gpus:
      return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}
    if not self.cores:
      return {}
    env = {var: str(len(self.cores)) for var in _THREAD_VARS}
    if len(self.cores) == 1:  # XLA's Eigen pool would otherwise add threads to one core.
      env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    return env


def visible_gpus() -> list[str]:
  """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
  if "CUDA_VISIBLE_DEVICES" in os.environ:
    return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=60, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [line.strip() for line in out.stdout.splitlines() if line.strip()] if (
      out.returncode == 0) else []


def make_slots(parallel: int, platform: str = "auto") -> list[Slot]:
  """`parallel` disjoint shares of the machine's GPUs (platform 'gpu', or 'auto' with GPUs) or
  CPU cores. One run at a time gets the whole machine, untouched."""
  if parallel < 1:
    raise sweep_lib.SweepError(f"--parallel must be at least 1, got {parallel}")
  if parallel == 1:
    return [Slot(0)]
  gpus = visible_gpus() if platform in ("auto", "gpu") else []
  if platform == "gpu" and not gpus:
    raise sweep_lib.SweepError("--platform gpu: no GPU found (CUDA_VISIBLE_DEVICES / nvidia-smi)")
  if gpus:
    if parallel > len(gpus):
      raise sweep_lib.SweepError(f"--parallel {parallel} needs at least {parallel} GPUs; "
                                 f"{len(gpus)} visible ({','.join(gpus)})")
    per = len(gpus) // parallel  # Equal shares: a run's batch must divide its device count.
    if len(gpus) % parallel:
      print(f"warning: {len(gpus)} GPUs do not split evenly into {parallel}; "
            f"{len(gpus) % parallel} stay idle", flush=True)
    return [Slot(i, gpus=tuple(gpus[i * per:(i + 1) * per])) for i in range(parallel)]
  cores = sorted(os.sched_getaffinity(0))
  if parallel > len(cores):
    raise sweep_lib.SweepError(f"--parallel {parallel} needs at least {parallel} CPU cores; "
                               f"this process may use {len(cores)}")
  bounds = [round(i * len(cores) / parallel) for i in range(parallel + 1)]
  return [Slot(i, cores=tuple(cores[bounds[i]:bounds[i + 1]])) for i in range(parallel)]


def merge_env(*layers: dict[str, str]) -> dict[str, str]:
  """Later layers win, except XLA_FLAGS, whose flags are merged (a later flag of the same name
  wins)."""
  out: dict[str, str] = {}
  for layer in layers:
    for key, value in layer.items():
      out[key] = merge_xla_flags(out.get(key, ""), value) if key == "XLA_FLAGS" else value
  return out


def merge_xla_flags(*flag_strings: str) -> str:
  flags: dict[str, str] = {}
  for text in flag_strings:
    for token in text.split():
      flags[token.split("=", 1)[0]] = token
  return " ".join(flags.values())


_LIBC = None


def _libc():
  global _LIBC
  if _LIBC is None:
    _LIBC = ctypes.CDLL(None, use_errno=True)
  return _LIBC


def launch(command: Sequence[str], env: dict[str, str], log_path: str,
           cores: Sequence[int] = ()) -> subprocess.Popen:
  """Starts `command` in its own session with stdout and stderr appended to `log_path`,
  pinned to `cores` (if any), and set to get SIGTERM if this process dies."""
  libc, parent = _libc(), os.getpid()

  def child_setup():  # Runs in the child between fork and exec: no allocation-heavy work.
    if cores:
      os.sched_setaffinity(0, cores)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # The parent died before prctl took effect.
      os._exit(75)  # pylint: disable=protected-access

  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"\n=== {_now()} {shlex.join(command)}\n")
    log.flush()
    return subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, preexec_fn=child_setup,
                            start_new_session=True)


def _now() -> str:
  return datetime.datetime.now().isoformat(sep=" ", timespec="seconds")


class SweepLock:
  """One runner per sweep directory (an flock on DIR/sweep.lock, released when the process
  ends, however it ends)."""

  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    self.path = os.path.join(directory, "sweep.lock")
    self._file = open(self.path, "a+")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or "another process"
      self._file.close()
      raise sweep_lib.SweepError(f"{directory} is in use by another sweep runner ({holder}); "
                                 "wait for it to end or stop it") from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f"pid {os.getpid()}, started {_now()}: {shlex.join(sys.argv)}\n")
    self._file.flush()

  def release(self) -> None:
    self._file.close()


class _Stop(interrupt.SignalScope):
  """SIGINT/SIGTERM: the first asks every run to save and stop; a second kills them."""

  def __init__(self):
    super().__init__()
    self.requested = False
    self.processes: dict[str, subprocess.Popen] = {}

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if not self.requested:
      self.requested = True
      print(f"{name} received: asking {len(self.processes)} running run(s) to save a checkpoint "
            "and stop (send it again to kill them without saving)", flush=True)
      self._signal_all(signal.SIGTERM)
    else:
      print(f"{name} received again: killing the runs", flush=True)
      self._signal_all(signal.SIGKILL)

  def _signal_all(self, sig: int) -> None:
    for proc in self.processes.values():
      try:
        os.killpg(proc.pid, sig)
      except ProcessLookupError:
        pass


@dataclasses.dataclass
class _Running:
  run: Any  # A manifest run (dict).
  slot: Slot
  proc: subprocess.Popen
  started: float
  run_dir: str
  start_step: int  # Where this attempt started (its checkpoint).

  def projection(self, now: float) -> tuple[float, float] | None:
    """(seconds left, seconds a whole run takes) at this attempt's pace so far, or None
    before its first logged step."""
    step = sweep_lib.last_step(self.run_dir) or 0
    if step <= self.start_step:
      return None
    per_step = (now - self.started) / (step - self.start_step)
    return per_step * (self.run["total_steps"] - step), per_step * self.run["total_steps"]


def _reap(proc: subprocess.Popen) -> tuple[int, float] | None:
  """(exit code, CPU seconds) of a process that has ended, else None."""
  pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
  if pid == 0:
    return None
  proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, usage.ru_utime + usage.ru_stime


def _eta(durations: list[float], running: list[_Running], pending: int, slots: int,
         now: float) -> float | None:
  """Seconds left: every waiting run takes the finished runs' mean duration (before one has
  finished: what the running ones project), the running ones what their pace projects; the
  work is shared over the slots. None until there is anything to go by."""
  projections = [r.projection(now) for r in running]
  mean = sum(durations) / len(durations) if durations else None
  if mean is None:
    whole = [p[1] for p in projections if p]
    if pending and not whole:
      return None
    mean = sum(whole) / len(whole) if whole else 0.0
  left = 0.0
  for r, p in zip(running, projections):
    if p is None and not durations:
      return None
    left += p[0] if p else max(mean - (now - r.started), 0.0)
  return (left + mean * pending) / slots


def run_local(directory: str, manifest: dict[str, Any], slots: list[Slot],
              python: str = sys.executable, poll_sec: float = 0.5) -> int:
  """Runs every unfinished run of the sweep (its `manifest`), len(slots) at a time. Returns 0
  if all finished, 1 if any failed, 75 if some were stopped before finishing (resumable)."""
  runs = manifest["runs"]
  for r in runs:  # Attempts that a killed runner left under way are recorded first.
    sweep_lib.recover_attempt(os.path.join(directory, r["name"]), r["total_steps"])
  status = {r["name"]: sweep_lib.run_status(os.path.join(directory, r["name"]),
                                            r["total_steps"]) for r in runs}
  durations = [s.seconds for s in status.values() if s.state == "finished" and s.seconds]
  done = sum(s.state == "finished" for s in status.values())
  seed_order = {seed: i for i, seed in enumerate(dict.fromkeys(r["seed"] for r in runs))}
  # Resumable runs first, then seed by seed, so that a partial sweep covers every point early.
  todo = sorted((r for r in runs if status[r["name"]].state != "finished"),
                key=lambda r: (status[r["name"]].state != "unfinished", seed_order[r["seed"]]))
  total = len(runs)
  print(f"{total} runs: {done} finished, {len(todo)} to run, {len(slots)} at a time "
        f"({', '.join(s.describe() for s in slots)})", flush=True)
  env = dict(manifest["env"])
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in env:
    # Runs of the same shapes (e.g. the seeds of a point) compile once per sweep.
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(directory, "jax_cache")
  free = list(slots)
  running: dict[str, _Running] = {}
  failed: list[tuple[str, str]] = []
  stopped: list[str] = []
  last_progress = time.monotonic()

  def progress(now: float) -> None:
    eta = _eta(durations, list(running.values()), len(todo), len(slots), now)
    print(f"[{_now()}] {done}/{total} done, {len(running)} running, {len(failed)} failed, "
          f"{len(todo)} waiting | ETA "
          f"{metrics.format_duration(eta) if eta is not None else '(after the first logged step)'}",
          flush=True)

  with _Stop() as stop:
    while running or (todo and not stop.requested):
      while todo and free and not stop.requested:
        run, slot = todo.pop(0), free.pop(0)
        run_dir = os.path.join(directory, run["name"])
        command = sweep_lib.trainer_command(run_dir, manifest["config"], run["argv"], python)
        proc = launch(command, merge_env(os.environ, env, slot.env()),
                      os.path.join(run_dir, sweep_lib.LOG), slot.cores)
        checkpoint = status[run["name"]].checkpoint
        running[run["name"]] = _Running(run, slot, proc, time.time(), run_dir, checkpoint or 0)
        sweep_lib.begin_attempt(run_dir, proc.pid, running[run["name"]].started)
        stop.processes[run["name"]] = proc
        resumed = f" (resuming from step {checkpoint})" if checkpoint else ""
        print(f"[{_now()}] start {run['name']} on {slot.describe()}{resumed}", flush=True)
      time.sleep(poll_sec)
      events = False
      for name, r in list(running.items()):
        ended = _reap(r.proc)
        if ended is None:
          continue
        code, cpu = ended
        events = True
        seconds = time.time() - r.started
        if stop.requested and code == -signal.SIGTERM:
          code = 75  # Stopped by us before it could install its handler: nothing was lost.
        del running[name], stop.processes[name]
        free.append(r.slot)
        free.sort(key=lambda s: s.index)
        run_dir = os.path.join(directory, name)
        st = sweep_lib.record_attempt(run_dir, r.run["total_steps"], code, seconds, r.started,
                                      cpu)
        took = metrics.format_duration(seconds)
        if st.state == "finished":
          done += 1
          durations.append(st.seconds)
          print(f"[{_now()}] done  {name} in {took}", flush=True)
        elif st.state == "failed":
          failed.append((name, st.detail))
          print(f"[{_now()}] FAILED {name} after {took}: {st.detail}", flush=True)
        else:
          stopped.append(name)
          saved = (f"its checkpoint at step {st.checkpoint}" if st.checkpoint is not None
                   else "the start")
          print(f"[{_now()}] stopped {name} after {took} ({sweep_lib.describe_exit(code)}); the "
                f"next invocation resumes it from {saved}", flush=True)
      now = time.monotonic()
      if events or now - last_progress > _HEARTBEAT_SEC:
        progress(time.time())
        last_progress = now
    interrupted = stop.requested

  print(f"finished {done}/{total}; failed {len(failed)}; unfinished "
        f"{total - done - len(failed)}", flush=True)
  for name, detail in failed:
    print(f"  failed: {name}: {detail}", flush=True)
  if failed:
    return 1
  if interrupted or stopped or done < total:
    print("run the same command again to resume the unfinished runs", flush=True)
    return 75
  return 0
