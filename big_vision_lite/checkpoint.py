"""Orbax checkpoints of the train state and the input iterator state.

Each step is written to a temporary directory and renamed when complete (Orbax's commit), so a
crash or `kill -9` at any moment leaves the previous checkpoints loadable. Saves are
asynchronous: the state is copied to host memory, then written while training goes on.
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from big_vision_lite import errors, pytree


class CheckpointMismatch(errors.Error, ValueError):
  """The checkpoint does not fit the model/optimiser built from the config."""


class NoCheckpoint(errors.Error, FileNotFoundError):
  """There is no checkpoint (or none for the step asked for)."""


class Checkpointer:
  """Saves and restores {'state': train state pytree, 'data': JSON input state} by step."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict[str, Any], int]:
    """Restores (state, data_state, step) onto the shardings in `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise NoCheckpoint(f"no checkpoint for step {step} under {self.directory} "
                              f"(available: {self.all_steps()})")
    self._check_shapes(step, abstract_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"], step

  def _check_shapes(self, step: int, abstract_state) -> None:
    check_shapes(self.manager.item_metadata(step)["state"], abstract_state,
                 f"{self.directory}/{step}")

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


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


def restore_params(directory: str, step: int | None = None, sharding=None):
  """Only the parameters of checkpoint `step` (default: newest), whatever device topology wrote
  it: as host numpy arrays, or as jax.Arrays with `sharding` (one sharding for every leaf)."""
  directory = os.path.abspath(directory)
  manager = ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise NoCheckpoint(f"no checkpoint for step {step} under {directory} (available: "
                            f"{list(manager.all_steps())}); train first, or pass an existing step")
  meta = manager.item_metadata(step)["state"]
  stored = dict(getattr(meta, "tree", meta))["params"]
  on = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {"params": jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=on), stored)}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
  params = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      target, restore_args=restore_args, partial_restore=True)))["state"]["params"]
  manager.close()
  return params if sharding is not None else jax.device_get(params)
