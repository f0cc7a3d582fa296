"""Test-session set-up, done before jax is imported.

- 8 simulated CPU devices for every test (shardings, collectives and shard_map run for real),
  compiled without XLA's backend optimisations (compilation dominates a tiny model's test).
- One persistent compilation cache per test run, shared by its pytest-xdist workers and the
  processes the tests start (the same tiny model is compiled by many tests: it compiles once),
  removed when the run ends.
"""

import os
import shutil
import socket
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for `devices` simulated CPU devices, for the tests and the processes they start.
  Backend optimisation level 0: tests run tiny models for a few steps, where XLA's LLVM passes
  cost more (about 40% of each compilation) than they save."""
  return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"


def process_env(devices: int) -> dict[str, str]:
  """The environment of a process a test starts: this checkout importable, JAX on the CPU with
  `devices` simulated devices, the run's compilation cache."""
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices))


def free_port() -> int:
  """A TCP port of 127.0.0.1 free now (for a multi-process job's coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
  """A real S3 server (moto's server mode) on loopback for the module's tests; clients (s3fs,
  botocore) find it through the standard AWS_* variables, set while the module runs."""
  from moto.server import ThreadedMotoServer  # pylint: disable=import-outside-toplevel
  from s3fs import S3FileSystem  # pylint: disable=import-outside-toplevel
  # fsspec keeps one client per set of arguments: one made for another module's server (now
  # stopped) would be reused.
  S3FileSystem.clear_instance_cache()
  port = free_port()
  server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
  server.start()
  env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield env["AWS_ENDPOINT_URL"]
  finally:
    server.stop()
    S3FileSystem.clear_instance_cache()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k)
      else:
        os.environ[k] = v


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_CACHE_ROOT = os.path.join(tempfile.gettempdir(), f"bvl-test-jax-cache-{os.getuid()}")
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_CACHE_ROOT, _RUN))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_configure(config):
  """The controller names the run (xdist passes the name to its workers), so that it can
  remove the run's cache at the end."""
  if not hasattr(config, "workerinput") and getattr(config.option, "testrunuid", "") is None:
    config.option.testrunuid = uuid.uuid4().hex


def pytest_sessionfinish(session, exitstatus):
  """The run's cache goes with it (on the controller, once every worker is done)."""
  del exitstatus
  if not hasattr(session.config, "workerinput"):
    for run in {_RUN, getattr(session.config.option, "testrunuid", None)} - {None}:
      shutil.rmtree(os.path.join(_CACHE_ROOT, run), ignore_errors=True)
