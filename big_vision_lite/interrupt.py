"""Stopping a run cleanly on SIGTERM (preemption, `scancel`, a time limit) or SIGINT (Ctrl-C).

The first signal asks the trainer to finish its current step, save a checkpoint, wait for it to
commit and exit with EXIT_CODE; a second SIGINT (or, in a single process, a second SIGTERM) ends
the process at once. In a multi-process job every process must save at the same step: JAX's
preemption service (started by `jax.distributed.initialize`) owns SIGTERM, spreads the notice to
every process and picks the step, so SIGINT is forwarded to it as SIGTERM.
"""

import os
import signal
import sys

import jax
from jax.experimental import multihost_utils

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

  def _handle(self, signum, frame) -> None:
    raise NotImplementedError


class StopRequest(SignalScope):
  """Installs the handlers; `should_stop(step)` is True at the step where every process stops.

  Use as a context manager: the previous handlers come back on exit.
  """

  def __init__(self):
    super().__init__()
    self.multiprocess = jax.process_count() > 1
    self.received: str | None = None

  def signals(self) -> tuple[int, ...]:
    # Multi-process: JAX's preemption service owns SIGTERM.
    return (signal.SIGINT,) if self.multiprocess else (signal.SIGINT, signal.SIGTERM)

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    # A second signal of this kind falls through to the default action: the process ends at once.
    signal.signal(signum, signal.SIG_DFL)
    if self.received is None:
      self.received = name
      print(f"{name} received: finishing this step, saving a checkpoint and exiting with code "
            f"{EXIT_CODE} (send {name} again to abort without saving)", file=sys.stderr, flush=True)
    if self.multiprocess:  # Let JAX's preemption service agree on the step with the others.
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Call once per step, with the same steps on every process."""
    if self.multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None
