"""Checkpoints of the train state and the input iterator state that a run never loses.

DIRECTORY/<step>/ holds `state/` (Orbax PyTree: parameters, optimiser state, step), `data/` (the
input iterator's state, JSON) and `fingerprints/` (JSON: a 32-bit fingerprint of every state
leaf, taken on device when saving, and a CRC-32 of the data state). The array format checksums
only its indices, so bytes changed on disk (or an edited data state) can decode to wrong
numbers without an error; the fingerprints catch that.

Saving is asynchronous and atomic: the arrays are copied to host memory, then written in the
background into DIRECTORY/<step>.orbax-checkpoint-tmp, which is renamed to DIRECTORY/<step>
once every process has written its part. A failed write (a full disk) is raised as
CheckpointWriteError by the next `check()`, `save()`, `wait()` or `close()`; its temporary
directory is removed. Checkpoints beyond the newest `keep` are deleted only after a newer one
has committed.

Restoring takes the newest checkpoint that restores. One with missing or garbled files, or
with data that fails its fingerprint, is skipped with a warning and, once an older one has
restored, moved to DIRECTORY.corrupt/<step> (kept for inspection; the step can be saved
again). Every process takes the same decision. If none restores, nothing is moved and
CheckpointUnreadable lists each checkpoint's problem. Stored shapes that differ from the
model's are a config problem: CheckpointMismatch at once, no fallback.
"""

import glob
import json
import logging
import os
import re
import shutil
import sys
import threading
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from big_vision_lite import errors, pytree

_TMP_SUFFIX = ".orbax-checkpoint-tmp"
# The files without which a checkpoint cannot be read (Orbax's names inside each item).
_REQUIRED = ("state/_METADATA", "data/metadata", "fingerprints/metadata")


class CheckpointMismatch(errors.Error, ValueError):
  """The checkpoint does not fit the model/optimiser built from the config."""


class CheckpointUnreadable(errors.Error):
  """No checkpoint restores (or the one asked for does not); the message lists the problems."""


class CheckpointNotFound(errors.Error, FileNotFoundError):
  """There is no checkpoint (for the step asked for)."""


class CheckpointWriteError(errors.Error):
  """An asynchronous save failed (e.g. the disk is full); earlier checkpoints are intact."""

  exit_code = 4


class _Unreadable(Exception):
  """This process could not read a checkpoint; the message says why, in a few words."""


class Checkpointer:
  """Saves and restores {'state': train state pytree, 'data': JSON input state} by step."""

  def __init__(self, directory: str, keep: int | None = 3):
    self.directory = os.path.abspath(directory)
    self.keep = keep
    self._writer: ocp.AsyncCheckpointer | None = None  # Created by the first save.
    self._thread: threading.Thread | None = None  # Waits for the pending save, then rotates.
    self._failure: tuple[int, BaseException] | None = None

  def all_steps(self) -> list[int]:
    """Steps of the committed checkpoints, oldest first."""
    return _committed_steps(self.directory)

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state, data_state: dict[str, Any]) -> None:
    """Starts writing checkpoint `step` (all processes call this) and returns once the arrays
    are copied to host. First waits for the previous save, raising CheckpointWriteError if it
    failed. A step already saved (or being saved) is not written again."""
    self.wait()
    # Decided together: a process that skipped would leave the others waiting in Orbax's save.
    if _worst_over_processes(int(step in self.all_steps()), None)[0]:
      return
    if self._writer is None:
      if jax.process_index() == 0:
        os.makedirs(self.directory, exist_ok=True)
        # Partial writes of a run that was killed; one trainer per workdir (lock.py).
        for tmp in glob.glob(os.path.join(self.directory, "*" + _TMP_SUFFIX + "*")):
          shutil.rmtree(tmp, ignore_errors=True)
      _quiet_orbax_leftovers()
      self._writer = ocp.AsyncCheckpointer(ocp.CompositeCheckpointHandler(
          state=ocp.PyTreeCheckpointHandler(), data=ocp.JsonCheckpointHandler(),
          fingerprints=ocp.JsonCheckpointHandler()))
    prints = {**fingerprints(state), _DATA_PRINT: _data_fingerprint(data_state)}
    try:
      self._writer.save(epath.Path(self.directory) / str(step), args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data_state),
          fingerprints=ocp.args.JsonSave(prints)))
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(step, e) from e
    self._thread = threading.Thread(target=self._finish, args=(step,), name=f"checkpoint-{step}")
    self._thread.start()

  def _finish(self, step: int) -> None:
    """Background: waits for the commit of `step`, then deletes checkpoints beyond `keep`."""
    try:
      self._writer.wait_until_finished()
    except BaseException as e:  # pylint: disable=broad-except
      self._failure = (step, e)
      return
    if jax.process_index() == 0 and self.keep:
      steps = self.all_steps()
      for old in steps[:-self.keep]:
        if old < step:
          shutil.rmtree(os.path.join(self.directory, str(old)), ignore_errors=True)

  def check(self) -> None:
    """Non-blocking: raises CheckpointWriteError if a save that has finished failed."""
    if self._thread is not None and not self._thread.is_alive():
      self.wait()

  def wait(self) -> None:
    """Blocks until the pending save has committed; raises CheckpointWriteError if it failed."""
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._failure is not None:
      (step, e), self._failure = self._failure, None
      raise self._write_error(step, e) from e

  def close(self) -> None:
    """Waits for the pending save (raising its error) and releases Orbax's resources."""
    try:
      self.wait()
    finally:
      if self._writer is not None:
        self._writer.close()
        self._writer = None

  def _write_error(self, step: int, e: BaseException) -> CheckpointWriteError:
    """Removes what the failed save left and says what happened, with the free space."""
    if self._writer is not None:
      # Closing joins Orbax's writer threads, which may still be writing other files of the
      # failed save: only then can its partial write be removed for good. The next save opens
      # a new writer.
      try:
        self._writer.close()
      except Exception:  # pylint: disable=broad-except
        pass  # The save's own error is the one reported.
      self._writer = None
    if jax.process_index() == 0:
      for tmp in glob.glob(os.path.join(self.directory, f"{step}{_TMP_SUFFIX}*")):
        shutil.rmtree(tmp, ignore_errors=True)
    good = self.all_steps()
    kept = (f"earlier checkpoints are intact (newest: step {good[-1]}, "
            f"{_format_bytes(_disk_usage(os.path.join(self.directory, str(good[-1]))))})"
            if good else "there is no earlier checkpoint")
    return CheckpointWriteError(
        f"checkpoint of step {step} could not be written to {self.directory}/{step}: "
        f"{write_failure(e, self.directory)}.\n{kept[0].upper() + kept[1:]}: make room, then "
        "run the same command to resume.")

  def restore(self, abstract_state) -> tuple[Any, dict[str, Any], int] | None:
    """(state, data_state, step) from the newest checkpoint that restores, onto the shardings
    of `abstract_state`; None if there is no checkpoint. See the module docstring."""
    steps = self.all_steps()
    if not steps:
      return None

    def attempt(path):
      check_shapes(_read_metadata(path), abstract_state, path)
      return _read(path, abstract_state, with_data=True)

    (state, data_state), step = _newest_that_restores(self.directory, steps, attempt,
                                                      move_aside=True)
    return state, data_state, step


def check_shapes(stored, abstract, where: str) -> None:
  """Raises CheckpointMismatch naming every leaf whose stored shape differs from `abstract`'s
  (or that only one of them has)."""
  stored_shapes = {n: tuple(getattr(m, "shape", ()) or ()) for n, m in pytree.named_leaves(stored)}
  wanted = {n: tuple(np.shape(x)) for n, x in pytree.named_leaves(abstract)}
  problems = [(n, f"checkpoint {stored_shapes.get(n, 'missing')} vs model {s}")
              for n, s in wanted.items() if stored_shapes.get(n) != s]
  problems += [(n, "in the checkpoint, not in the model") for n in stored_shapes
               if n not in wanted]
  if problems:
    problems.sort(key=lambda p: (not p[0].startswith("params/"), p[0]))  # Parameters first.
    shown = "\n".join(f"  {n}: {what}" for n, what in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise CheckpointMismatch(
        f"checkpoint {where} does not match the model built from this config "
        f"({len(problems)} differences):\n{shown}{more}\n"
        "Use the config the checkpoint was trained with, or a fresh --workdir.")


def restore_params(directory: str, step: int | None = None, sharding=None,
                   with_step: bool = False):
  """Only the parameters of checkpoint `step` (default: the newest that restores, skipping
  damaged ones with a warning as the trainer does; nothing is moved), whatever device topology
  wrote it: as host numpy arrays, or as jax.Arrays with `sharding` (one sharding for every
  leaf). `with_step`: (parameters, the step restored)."""
  directory = os.path.abspath(directory)
  steps = _committed_steps(directory)
  if not steps:
    raise CheckpointNotFound(f"no checkpoint under {directory}: train first")
  if step is not None and step not in steps:
    raise CheckpointNotFound(f"no checkpoint for step {step} under {directory} (available: "
                             f"{steps}): pass one of those")
  on = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def attempt(path):
    stored = _read_metadata(path)
    if "params" not in stored:
      raise _Unreadable("state/_METADATA lists no params")
    target = {"params": jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=on), stored["params"])}
    return _read(path, target, with_data=False)

  if step is not None:
    (state, _), step = _newest_that_restores(directory, [step], attempt, move_aside=False,
                                             asked_for=step)
  else:
    (state, _), step = _newest_that_restores(directory, steps, attempt, move_aside=False)
  params = state["params"] if sharding is not None else jax.device_get(state["params"])
  return (params, step) if with_step else params


# --- Reading one checkpoint, and falling back past damaged ones.

def _read_metadata(path: str) -> dict:
  """The stored tree of checkpoint `path`, with Orbax's array metadata (shape, dtype) as leaves."""
  for rel in _REQUIRED:
    if not os.path.exists(os.path.join(path, rel)):
      raise _Unreadable(f"{rel} missing")
  handler = ocp.PyTreeCheckpointHandler()
  try:
    meta = handler.metadata(epath.Path(path) / "state")  # Also opens every array.
  except Exception as e:  # pylint: disable=broad-except
    raise _Unreadable(f"state: {_describe(e, path)}") from e
  finally:
    handler.close()
  return meta.tree


def _read(path: str, target, with_data: bool) -> tuple[tuple[Any, Any], dict[str, int]]:
  """((tree shaped and sharded like `target`, data state or None), stored fingerprints) of one
  checkpoint. `target` may be a part of the stored tree (e.g. only the parameters)."""
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.restore(epath.Path(path) / "state", args=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=True))
    jax.block_until_ready(tree)
  except Exception as e:  # pylint: disable=broad-except
    raise _Unreadable(f"state: {_describe(e, path)}") from e
  finally:
    handler.close()
  json_items = ("data", "fingerprints") if with_data else ("fingerprints",)
  loaded = {}
  for item in json_items:
    try:
      loaded[item] = ocp.JsonCheckpointHandler().restore(epath.Path(path) / item)
    except Exception as e:  # pylint: disable=broad-except
      raise _Unreadable(f"{item}/metadata: {_describe(e, path)}") from e
  return (tree, loaded.get("data")), loaded["fingerprints"]


def _newest_that_restores(directory: str, steps: list[int], attempt: Callable,
                          move_aside: bool, asked_for: int | None = None) -> tuple[Any, int]:
  """(attempt(path), step) for the newest step whose attempt succeeds on every process and
  whose data matches its fingerprints. Skipped steps get a warning line (and are moved to
  DIRECTORY.corrupt/ if `move_aside`); if none restores, CheckpointUnreadable lists them
  (`asked_for`: the one step the user asked for)."""
  _quiet_orbax_leftovers()
  problems: list[tuple[int, str]] = []
  for step in sorted(steps, reverse=True):
    path = os.path.join(directory, str(step))
    mismatch, problem, result = None, None, None
    try:
      result, stored_prints = attempt(path)
    except CheckpointMismatch as e:
      mismatch = e
    except _Unreadable as e:
      problem = str(e)
    # 0: restored, 1: shapes differ from the model's, 2: unreadable; the worst one counts
    # everywhere, so that every process takes the same decision.
    worst, problem = _worst_over_processes(2 if problem else 1 if mismatch else 0, problem)
    if worst == 1:
      raise mismatch or CheckpointMismatch(
          f"checkpoint {path} does not match the model built from this config (on another "
          "process). Use the config the checkpoint was trained with, or a fresh --workdir.")
    if worst == 0:
      problem = _verify(result[0], stored_prints, result[1])  # Same outcome everywhere.
      if problem is None:
        _report_skipped(directory, problems, step, move_aside)
        return result, step
    problems.append((step, problem))
  shown = "\n".join(f"  {s}: {p}" for s, p in problems[:8])
  more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
  if asked_for is not None:
    raise CheckpointUnreadable(
        f"checkpoint {directory}/{asked_for} is unreadable ({problems[0][1]}); "
        f"pick another step (available: {_committed_steps(directory)})")
  raise CheckpointUnreadable(
      f"none of the {len(steps)} checkpoints under {directory} restores:\n{shown}{more}\n"
      f"Nothing was moved or deleted. If the storage is healthy, move {directory} aside (or "
      "delete it) to start afresh, or use a fresh --workdir.")


def _report_skipped(directory: str, problems: list[tuple[int, str]], restored: int,
                    move_aside: bool) -> None:
  """One warning line per skipped checkpoint; moves them aside (process 0) if asked."""
  lead = jax.process_index() == 0
  for step, problem in problems:
    path, where = os.path.join(directory, str(step)), ""
    if move_aside and lead:
      try:
        where = f"moved to {_move_aside(path)}; "
      except OSError as e:
        where = f"could not move it aside ({e}); "
    if lead:
      print(f"warning: checkpoint {path} is unreadable ({problem}); {where}"
            f"falling back to step {restored}", flush=True)
  if move_aside and problems and jax.process_count() > 1:
    multihost_utils.sync_global_devices("big_vision_lite checkpoints moved aside")


def _move_aside(path: str) -> str:
  """Moves a damaged checkpoint DIR/<step> to DIR.corrupt/<step> (or <step>.2, ...)."""
  aside = os.path.dirname(path) + ".corrupt"
  os.makedirs(aside, exist_ok=True)
  dest, n = os.path.join(aside, os.path.basename(path)), 1
  while os.path.exists(dest):
    n += 1
    dest = os.path.join(aside, f"{os.path.basename(path)}.{n}")
  os.rename(path, dest)
  return dest


def _worst_over_processes(code: int, problem: str | None) -> tuple[int, str | None]:
  """(the highest `code` of all processes, the problem of the first process that has it)."""
  if jax.process_count() == 1:
    return code, problem
  text = np.zeros(512, np.uint8)
  raw = (problem or "").encode()[:512]
  text[:len(raw)] = np.frombuffer(raw, np.uint8)
  codes, texts = multihost_utils.process_allgather((np.int32(code), text))
  worst = int(np.max(codes))
  first = int(np.argmax(codes == worst))
  problem = bytes(texts[first][texts[first] != 0]).decode(errors="replace") or None
  if problem and first != jax.process_index():
    problem = f"on process {first}: {problem}"
  return worst, problem


# --- Fingerprints: a hash of every leaf's bits and element positions, summed modulo 2^32 (an
# exact, order-free reduction), so any sharding over any devices gives the same value.

def _mix(x):
  """A murmur3-style finaliser on uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _leaf_fingerprint(x):
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif x.dtype.itemsize >= 4:  # 8-byte types become [..., 2] uint32.
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    bits = bits.astype(jnp.uint32)
  index = jnp.zeros(bits.shape, jnp.uint32)
  for d, size in enumerate(bits.shape):
    index = index * jnp.uint32(size) + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, d)
  return jnp.sum(_mix(bits ^ _mix(index + jnp.uint32(0x9E3779B9))), dtype=jnp.uint32)


# Compiled per leaf shape rather than for the whole tree: a model repeats few shapes (the
# default run's 285 state leaves have 15), and one program per tree compiles about twice as long.
_fingerprint_leaf = jax.jit(_leaf_fingerprint)


def fingerprints(tree) -> dict[str, int]:
  """{leaf name: 32-bit fingerprint of its values}, the same for any sharding."""
  named = pytree.named_leaves(tree)
  values = jax.device_get([_fingerprint_leaf(x) for _, x in named])
  return {name: int(v) for (name, _), v in zip(named, values)}


# The fingerprint of the data state ('data/metadata': the input's position) among the leaves'.
_DATA_PRINT = "#data"


def _data_fingerprint(data_state) -> int:
  return zlib.crc32(json.dumps(data_state, sort_keys=True).encode())


def _verify(tree, stored: dict[str, int], data_state=None) -> str | None:
  """None if every leaf of `tree` (and `data_state`, when given and the checkpoint has its
  fingerprint) matches its stored fingerprint, else what differs."""
  bad = [name for name, value in fingerprints(tree).items() if stored.get(name) != value]
  if (data_state is not None and _DATA_PRINT in stored
      and stored[_DATA_PRINT] != _data_fingerprint(data_state)):
    bad.insert(0, "data/metadata (the input's position)")
  if not bad:
    return None
  more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
  return f"{bad[0]}{more}: data differs from what was saved (fingerprint mismatch)"


# --- Small helpers.

def _committed_steps(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def _describe(e: BaseException, path: str) -> str:
  """A one-line cause: the innermost storage-layer status message if there is one (TensorStore
  prefixes them with a code such as DATA_LOSS:), without its spec, paths relative to `path`;
  a long chain of 'context: context: cause' keeps its first and last two links."""
  chain = []
  while e is not None and len(chain) < 10:
    chain.append(e)
    e = e.__cause__ or e.__context__
  status = [c for c in chain if re.match(r"[A-Z_]+: ", str(c))]
  chosen = status[-1] if status else chain[0]
  text = str(chosen).split(" [tensorstore_spec=")[0].strip()
  text = (text.splitlines() or [type(chosen).__name__])[0]
  if path:
    text = text.replace(path + "/", "").replace(path, ".")
  links = text.split(": ")
  if len(text) > 160 and len(links) > 3:
    text = ": ".join([links[0], "...", *links[-2:]]).split("; at ")[0]
  return text if len(text) <= 200 else text[:197] + "..."


# --- Orbax's leftovers of a failed read or write. The failure itself is raised (and reported
# here in a line or two), but Orbax and asyncio also print a traceback for every array that was
# in flight: hundreds of lines of TensorStore specs that bury the message. These filters drop
# exactly those; anything else is reported as before. Installed by the first save or restore.

_ORBAX = f"{os.sep}orbax{os.sep}"


def _through_orbax(record: logging.LogRecord) -> bool:
  """The record's message, or its exception's traceback, comes from Orbax's code or files."""
  message = record.getMessage()
  if _ORBAX in message or ".orbax-checkpoint-tmp" in message:
    return True
  error = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
  tb = error.__traceback__ if error is not None else None
  while tb is not None:
    if _ORBAX in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


class _NoOrbaxLeftovers(logging.Filter):
  """Drops the tracebacks Orbax's background threads log for errors it also raises (absl
  logger), and asyncio's 'Task/Future exception was never retrieved' for Orbax's work."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if record.name == "asyncio":
      return not _through_orbax(record)
    return not (record.exc_info and _ORBAX in record.pathname)


def _unraisable_filter(previous):
  """sys.unraisablehook without Orbax's abandoned coroutines and TensorStore's callbacks into
  Orbax's closed event loop ('RuntimeError: Event loop is closed')."""
  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    from_orbax = code is not None and _ORBAX in code.co_filename
    closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                   and str(unraisable.exc_value) == "Event loop is closed")
    if not (from_orbax or closed_loop):
      previous(unraisable)

  hook.bvl_filter = True
  return hook


def _quiet_orbax_leftovers() -> None:
  for name in ("absl", "asyncio"):  # Orbax logs through absl.logging.
    logger = logging.getLogger(name)
    if not any(isinstance(f, _NoOrbaxLeftovers) for f in logger.filters):
      logger.addFilter(_NoOrbaxLeftovers())
  if not getattr(sys.unraisablehook, "bvl_filter", False):
    sys.unraisablehook = _unraisable_filter(sys.unraisablehook)


def write_failure(e: BaseException, directory: str) -> str:
  """Why a write under `directory` failed, with the free space: 'No space left on device
  (errno 28); 444.0 KiB free on that filesystem'."""
  return f"{_os_error(e)}; {_format_bytes(_free_bytes(directory))} free on that filesystem"


def _os_error(e: BaseException) -> str:
  """'No space left on device (errno 28)' from an OSError or a TensorStore message."""
  for c in (e, e.__cause__, e.__context__):
    if isinstance(c, OSError) and c.errno:
      return f"{os.strerror(c.errno)} (errno {c.errno})"
  code = re.search(r"os_error_code='?(\d+)", str(e))
  if code:
    return f"{os.strerror(int(code.group(1)))} (errno {code.group(1)})"
  return _describe(e, "")


def _free_bytes(directory: str) -> int:
  while not os.path.exists(directory):
    directory = os.path.dirname(directory)
  st = os.statvfs(directory)
  return st.f_bavail * st.f_frsize


def _disk_usage(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _format_bytes(n: float) -> str:
  if n < 1024:
    return f"{n:.0f} bytes"
  for unit in ("KiB", "MiB", "GiB", "TiB"):
    n /= 1024
    if n < 1024 or unit == "TiB":
      return f"{n:.1f} {unit}"
