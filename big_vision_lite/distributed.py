"""Multi-process start-up: `jax.distributed.initialize` only for a real multi-process launch."""

import argparse
import os

import jax

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
