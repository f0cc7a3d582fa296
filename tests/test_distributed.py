"""distributed.py: jax.distributed.initialize only for a real multi-process launch."""

import argparse

import jax
import pytest

from big_vision_lite import distributed, errors

CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")


@pytest.fixture
def calls(monkeypatch):
  """Records jax.distributed.initialize calls instead of joining a job; a bare environment."""
  for var in CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  made = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: made.append((a, k)))
  monkeypatch.setattr(jax.config, "update", lambda *a: made.append(("config", a)))
  return made


def test_a_plain_run_does_not_initialize(calls):
  distributed.initialize()
  distributed.initialize(num_processes=1)
  assert not distributed.is_multiprocess_env() and calls == []


@pytest.mark.parametrize("env, multi", [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, True),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, False),  # One task: a plain run.
    ({"SLURM_NTASKS": "4"}, False),  # Not inside a job.
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, True),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, False),  # A single-host TPU VM.
])
def test_cluster_environment_detection(calls, monkeypatch, env, multi):
  for var, value in env.items():
    monkeypatch.setenv(var, value)
  assert distributed.is_multiprocess_env() == multi
  distributed.initialize()
  # JAX reads the coordinator, process count and id from the environment itself.
  assert calls == ([("config", ("jax_cpu_collectives_implementation", "gloo")), ((), {})]
                   if multi else [])


def test_explicit_flags_and_auto(calls):
  parser = argparse.ArgumentParser()
  distributed.add_flags(parser)
  args = parser.parse_args(["--coordinator_address", "10.0.0.1:1234", "--num_processes", "2",
                            "--process_id", "1"])
  distributed.initialize_from(args)
  assert calls[-1] == (("10.0.0.1:1234",), {"num_processes": 2, "process_id": 1})
  distributed.initialize_from(parser.parse_args(["--distributed"]))
  assert calls[-1] == ((), {})


@pytest.mark.parametrize("flags", [
    dict(coordinator="10.0.0.1:1234"), dict(num_processes=2), dict(process_id=1),
    dict(coordinator="10.0.0.1:1234", num_processes=2)])
def test_partial_flags_are_a_clear_error(calls, flags):
  with pytest.raises(distributed.LaunchError) as e:
    distributed.initialize(**flags)
  assert isinstance(e.value, errors.Error)
  assert str(e.value) == ("a multi-process launch needs --coordinator_address, --num_processes "
                          "and --process_id together (or a SLURM / TPU environment)")
  assert calls == []  # Nothing was changed before the error.
