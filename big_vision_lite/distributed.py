"""Multi-process start-up (`jax.distributed.initialize` only for a real multi-process launch)
and gathering host arrays over processes."""

import argparse
import os
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_vision_lite import errors


class LaunchError(errors.Error, ValueError):
  """Multi-process flags that do not describe a launch."""


def is_multiprocess_env() -> bool:
  """True under a multi-task SLURM step or a multi-host TPU slice."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Joins the job when flags or the cluster environment say it has several processes.

  `auto=True` (the trainer's --distributed) lets JAX detect the cluster itself (TPU VM pod
  slices, SLURM, Open MPI, Kubernetes).
  """
  explicit = coordinator is not None or process_id is not None or (num_processes or 1) > 1
  if not explicit and not auto and not is_multiprocess_env():
    return
  if explicit and (coordinator is None or num_processes is None or process_id is None):
    raise LaunchError("a multi-process launch needs --coordinator_address, --num_processes and "
                      "--process_id together (or a SLURM / TPU environment)")
  # CPU devices need a collectives backend across processes; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-process flags every entry point takes (see `initialize`)."""
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--distributed", action="store_true",
                      help="multi-process job whose cluster JAX detects (e.g. a TPU VM pod slice)")


def initialize_from(args: argparse.Namespace) -> None:
  initialize(args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed)


# --- Gathering host arrays over processes (evaluation results, sufficient statistics).
# Arrays travel as raw bytes: JAX would narrow 64-bit values to 32 bits unless x64 is enabled,
# and float64 statistics must arrive unchanged.


def gather_rows(local: np.ndarray) -> np.ndarray:
  """Concatenates every process's rows [n_p, ...] in process order (n_p may differ); exact for
  every dtype."""
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  width = int(np.prod(local.shape[1:], dtype=np.int64))
  rows = np.ascontiguousarray(local).reshape(len(local), width).view(np.uint8)  # [n, row bytes]
  counts = multihost_utils.process_allgather(np.int32(len(local)))
  padded = np.zeros((int(counts.max()), rows.shape[1]), np.uint8)
  padded[:len(rows)] = rows
  everyone = multihost_utils.process_allgather(padded)  # [processes, max, row bytes]
  flat = np.concatenate([everyone[p, :c] for p, c in enumerate(counts)])
  return flat.view(local.dtype).reshape(len(flat), *local.shape[1:])


def gather_strings(local: Sequence[str]) -> list[str]:
  """Every process's strings in process order."""
  if jax.process_count() == 1:
    return list(local)
  encoded = [s.encode("utf-8") for s in local]
  lengths = gather_rows(np.array([len(b) for b in encoded], np.int64))
  flat = gather_rows(np.frombuffer(b"".join(encoded), np.uint8)).tobytes()
  ends = np.cumsum(lengths)
  return [flat[e - n:e].decode("utf-8") for e, n in zip(ends, lengths)]


def sum_over_processes(local: np.ndarray) -> np.ndarray:
  """The elementwise sum of every process's array of one shape, added in process order (so
  every process gets the same bits); exact transfer for every dtype."""
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  everyone = gather_rows(local[None])  # [processes, ...]
  total = everyone[0].copy()
  for part in everyone[1:]:
    total += part
  return total
