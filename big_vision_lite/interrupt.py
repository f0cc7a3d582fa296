"""Stopping a run cleanly on SIGTERM (preemption, `scancel`, a time limit) or SIGINT (Ctrl-C).

From the first line the trainer runs (before its libraries load) to its last, a signal is a
clean stop with exit code EXIT_CODE:

- During start-up (loading, input set-up, compilation, restoring, building evaluators) no update
  step has run, so there is nothing new to save: a watcher thread, woken by the signal even while
  the main thread is inside a long compilation, waits for any `critical()` block (a file being
  written) to end, runs the `on_stop` callbacks (releasing the workdir lock), prints one
  `stopped:` line and ends the process at once.
- Once `training()` has been called, the trainer finishes its current step, saves a checkpoint,
  waits for it to commit and exits with EXIT_CODE.

A second SIGINT (or, in a single process, a second SIGTERM) during training ends the process at
once. In a multi-process job every process must save at the same step: JAX's preemption service
(started by `jax.distributed.initialize`) owns SIGTERM once the job is joined, spreads the notice
to every process and picks the step, so SIGINT is forwarded to it as SIGTERM, and a signal that
arrives after joining stops the job at its first training step.
"""

import contextlib
import os
import signal
import sys
import threading
from typing import Callable

# sysexits.h EX_TEMPFAIL: "temporary failure; the user is invited to retry" (the run resumes).
EXIT_CODE = 75


class SignalScope:
  """A context manager whose `_handle(signum, frame)` handles `signals()` inside its block; the
  previous handlers come back on exit."""

  def __init__(self):
    self._previous = {}

  def signals(self) -> tuple[int, ...]:
    return (signal.SIGINT, signal.SIGTERM)

  def __enter__(self):
    for sig in self.signals():
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    raise NotImplementedError


class StopRequest(SignalScope):
  """Installs the handlers (see the module docstring); `should_stop(step)` is True at the step
  where every process stops.

  Use as a context manager, entered as early as possible: `phase` names what start-up is doing
  (for the message), `joined()` is called once the multi-process job is joined, `training()`
  when the first update step is about to run. The previous handlers come back on exit.
  """

  def __init__(self):
    super().__init__()
    self.multiprocess = False  # Known once the job is joined (`joined()`).
    self.received: str | None = None
    self._announced = False
    self.phase = "loading the libraries"
    self.on_stop: list[Callable[[], None]] = []  # Run before a start-up stop ends the process.
    self.where = ""  # Appended to the start-up stop message (e.g. the newest checkpoint).
    self._startup = True  # A signal now ends the process from the watcher thread.
    self._critical = threading.RLock()
    self._wakeup: tuple[int, int] | None = None
    self._previous_wakeup = -1
    self._watcher: threading.Thread | None = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      # The C-level handler writes each signal's number to this pipe at once, even while the
      # main thread runs a long C call (XLA compiling) and cannot run the Python handler.
      read, write = os.pipe()
      os.set_blocking(write, False)
      self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
      self._wakeup = (read, write)
      self._watcher = threading.Thread(target=self._watch, args=(read,), daemon=True,
                                       name="stop-watcher")
      self._watcher.start()
    return super().__enter__()  # The handlers last: each signal they see wakes the watcher.

  def __exit__(self, *exc) -> None:
    with self._critical:
      self._startup = False
    if self._wakeup is not None:
      signal.set_wakeup_fd(self._previous_wakeup)
      read, write = self._wakeup
      os.close(write)  # The watcher reads end-of-file and ends.
      self._watcher.join()
      os.close(read)
      self._wakeup = None
    super().__exit__(*exc)

  @contextlib.contextmanager
  def critical(self):
    """A block (writing a file, taking the workdir lock) that a start-up stop waits for."""
    with self._critical:
      yield

  def joined(self, process_count: int) -> None:
    """The multi-process job is joined: from now on JAX's preemption service owns SIGTERM (its
    handler replaced this one when the job was joined), and a stop waits for the first training
    step, where every process stops together."""
    if process_count > 1:
      with self._critical:
        self.multiprocess, self._startup = True, False

  def training(self) -> None:
    """The update steps begin: a signal from now on (or one received during start-up that did
    not end the process) stops at the end of a step, with a checkpoint."""
    with self._critical:
      self._startup = False

  def _watch(self, read: int) -> None:
    while True:
      try:
        data = os.read(read, 64)
      except OSError:
        return
      if not data:
        return
      names = [signal.Signals(b).name for b in data if b in (signal.SIGINT, signal.SIGTERM)]
      if names:
        with self._critical:
          if self._startup:
            self._stop_startup(names[0])

  def _stop_startup(self, name: str) -> None:
    """Ends the process during start-up: nothing new to save (holding `_critical`)."""
    for callback in reversed(self.on_stop):
      try:
        callback()
      except Exception:  # pylint: disable=broad-except
        pass  # The process ends either way; its lock is then taken over with a warning.
    print(f"stopped: {name} during start-up ({self.phase}); no update step had run, so there "
          f"was nothing new to save{self.where}. Run the same command to resume.",
          file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
      sys.stdout.flush()
    os._exit(EXIT_CODE)  # pylint: disable=protected-access

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    with self._critical:
      if self._startup and self._watcher is not None:
        # The watcher thread ends the process; should start-up end first, the first step stops.
        self.received = self.received or name
        return
    # A second signal of this kind falls through to the default action: the process ends at once.
    signal.signal(signum, signal.SIG_DFL)
    if self.received is None or not self._announced:
      self.received, self._announced = self.received or name, True
      print(f"{name} received: finishing this step, saving a checkpoint and exiting with code "
            f"{EXIT_CODE} (send {name} again to abort without saving)", file=sys.stderr, flush=True)
    if self.multiprocess:  # Let JAX's preemption service agree on the step with the others.
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Call once per step, with the same steps on every process."""
    if self.multiprocess:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None
