"""Ablation sweeps: a sweep file expands to runs, each with a name, a workdir and a checked config.

A sweep file is a Python file (like a config) whose `get_sweep(arg)` returns a `Sweep`:

  def get_sweep(arg=None):
    return Sweep(config="configs/siglip_shapes.py", base={"total_steps": 500},
                 points=product(loss=["sigmoid", "softmax"], batch_size=[32, 64, 128]),
                 seeds=(0, 1, 2), seed_keys=("seed", "input.data.seed"),
                 metrics=("zeroshot/shapes_shape/top1",))

Each point (of a product of axes, or of a list of override dicts) runs once per seed, in
DIR/<name>/, where the name renders the point and the seed: `loss=softmax,batch_size=64,seed=1`
(a dotted key is shortened to its last parts when that is unambiguous). Every run's config is
resolved against the schema when the sweep is expanded, so a typo in an axis fails before
anything runs. `python -m big_vision_lite.sweep` runs the runs (locally or as a SLURM job
array), `python -m big_vision_lite.sweep.report DIR` tabulates and plots them.

A sweep directory holds `sweep.json` (the expanded runs, written by the runner; the report and
the SLURM tasks read it) and one directory per run: the trainer's files plus `log.txt` (every
attempt's output), `attempts.jsonl` (one line per attempt: exit code, seconds) and `done.json`,
written only after the trainer exited 0 and its metrics reached the final step.
"""

import dataclasses
import datetime
import itertools
import json
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import errors, files, metrics
from big_vision_lite.errors import ConfigError

__all__ = ["Sweep", "Product", "product", "Named", "named", "Run", "load", "expand", "axes_of",
           "render", "short_names", "config_arg", "trainer_command", "Status", "run_status",
           "attempts", "last_step", "record_attempt", "begin_attempt",
           "recover_attempt", "describe_exit", "config_differences",
           "write_manifest", "read_manifest", "MANIFEST", "LOG", "RUNNING", "SweepError"]

MANIFEST = "sweep.json"
DONE = "done.json"
ATTEMPTS = "attempts.jsonl"
RUNNING = "attempt.json"  # An attempt under way (its runner may have been killed).
LOG = "log.txt"
_MAX_NAME = 200  # Characters; file systems allow 255 bytes per name.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


class SweepError(errors.Error):
  """A sweep that cannot run as written; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Named:
  """An axis value with its own label in run names (for values that render badly, e.g. dicts)."""

  label: str
  value: Any


def named(label: str, value: Any) -> Named:
  """`value` shown as `label` in run names and reports: `named("cc12m", {"name": "tar", ...})`."""
  if not label or _UNSAFE.search(label):
    raise SweepError(f"label {label!r} must be non-empty and use only letters, digits and "
                     "'._+-' (it becomes part of a directory name)")
  return Named(label, value)


@dataclasses.dataclass(frozen=True)
class Product:
  """Every combination of the axes' values; the first axis varies slowest."""

  axes: dict[str, tuple]

  def points(self) -> list[dict[str, Any]]:
    keys = list(self.axes)
    return [dict(zip(keys, values)) for values in itertools.product(*self.axes.values())]


def product(axes: dict[str, Sequence] | None = None, **more: Sequence) -> Product:
  """Axes as keyword arguments (`loss=[...]`) or, for dotted keys, a dict
  (`{"model.bias_init": [...]}`); each maps a config key to the values it takes."""
  merged = {**(axes or {}), **more}
  for key, values in merged.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, range)):
      raise SweepError(f"axis {key!r} needs a list of values, got {values!r}")
    if not values:
      raise SweepError(f"axis {key!r} has no values")
  return Product({k: tuple(v) for k, v in merged.items()})


@dataclasses.dataclass
class Sweep:
  """What a sweep file's `get_sweep(arg)` returns.

  config: the base config, `path/to/config.py[:arg]` (relative paths: from the current
    directory, else from the sweep file's).
  points: a `product(...)` of axes or a list of {dotted key: value} dicts, one per point.
  base: {dotted key: value} overrides applied to every run before its point's.
  seeds: each point runs once per seed; every key in `seed_keys` is set to the seed.
  metrics: the metrics the report tabulates and plots (final values, metrics.jsonl keys).
  derived: point -> more overrides that follow from it (e.g. the bias init from the batch
    size); applied after the point, shown by --dry_run, not part of the run name.
  env: environment variables for every run (XLA_FLAGS are merged, not replaced).
  plot_x: the axis on the x axis of the report's plots (default: the one with most values).
  slurm: #SBATCH options for --slurm, e.g. {"nodes": 4, "time": "2-00:00:00"}.
  description: one paragraph for the report's header.
  """

  config: str
  points: Product | Sequence[dict[str, Any]]
  base: dict[str, Any] = dataclasses.field(default_factory=dict)
  seeds: Sequence[int] = (0,)
  seed_keys: Sequence[str] = ("seed",)
  metrics: Sequence[str] = ()
  derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None
  env: dict[str, str] = dataclasses.field(default_factory=dict)
  plot_x: str | None = None
  slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
  description: str = ""


@dataclasses.dataclass
class Run:
  """One training run of a sweep."""

  name: str                    # Also its directory under the sweep's workdir.
  point: dict[str, Any]        # Axis key -> value (labels unwrapped).
  labels: dict[str, str]       # Axis key -> the value as rendered in the name.
  seed: int
  overrides: dict[str, Any]    # Everything set on top of the config file, in order.
  argv: list[str]              # The same as `--config.KEY=VALUE` arguments of the trainer.
  config: ml_collections.ConfigDict  # Resolved.
  total_steps: int


def load(spec: str) -> Sweep:
  """The Sweep of `path/to/sweep.py[:arg]` (calls `get_sweep(arg)`)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise SweepError(f"sweep file {path!r} not found (e.g. configs/sweeps/siglip_loss_batch.py)")
  sweep = files.call_python_file(path, "get_sweep", arg, SweepError)
  if not isinstance(sweep, Sweep):
    raise SweepError(f"{path}: get_sweep() returned {type(sweep).__name__}, not a Sweep")
  config_path, sep, config_arg = sweep.config.partition(":")
  if not os.path.isabs(config_path) and not os.path.exists(config_path):
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), config_path)
    config_path = beside if os.path.exists(beside) else config_path
  if not os.path.exists(config_path):
    raise SweepError(f"{path}: config {sweep.config!r} not found")
  sweep.config = os.path.abspath(config_path) + sep + config_arg
  return sweep


def render(value: Any) -> str:
  """A value as it appears in a run name: stable, readable and safe in a file name."""
  if isinstance(value, Named):
    return value.label
  if value is None:
    return "none"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return f"{value:.6g}"  # 0.001, 1e-05, -4.85203: two values this close collide (checked).
  if isinstance(value, str):
    return _UNSAFE.sub("_", value) or "empty"
  if isinstance(value, (list, tuple)):
    return "_".join(render(v) for v in value) or "empty"
  if isinstance(value, dict):
    return "_".join(f"{render(k)}-{render(v)}" for k, v in value.items()) or "empty"
  return _UNSAFE.sub("_", str(value))


def short_names(keys: Sequence[str], reserved: Sequence[str] = ("seed",)) -> dict[str, str]:
  """Each dotted key -> its shortest dotted suffix that no other key (nor `reserved`) ends with:
  `model.bias_init` -> `bias_init`, but `model.image.width` and `model.text.width` stay
  `image.width` and `text.width`."""
  out = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      others = [k for k in keys if k != key]
      clash = any(k == suffix or k.endswith("." + suffix) for k in others)
      if not clash and suffix not in reserved:
        out[key] = suffix
        break
    else:
      out[key] = key
  return out


def _axes(points: list[dict[str, Any]]) -> list[str]:
  """The keys that vary, in order of first appearance."""
  keys = []
  for point in points:
    keys += [k for k in point if k not in keys]
  return keys


def _value(v: Any) -> Any:
  return v.value if isinstance(v, Named) else v


def axes_of(sweep: Sweep) -> list[str]:
  """The sweep's axes: the product's keys, or every key that a listed point sets."""
  if isinstance(sweep.points, Product):
    return list(sweep.points.axes)
  return _axes(list(sweep.points))


def expand(sweep: Sweep) -> list[Run]:
  """Every run (point x seed) with its name and resolved config; fails on the first run whose
  config does not resolve, naming the run."""
  points = sweep.points.points() if isinstance(sweep.points, Product) else list(sweep.points)
  if not points:
    raise SweepError("the sweep has no points")
  if not sweep.seeds:
    raise SweepError("the sweep has no seeds; give at least one, e.g. seeds=(0,)")
  axes = axes_of(sweep)
  clash = [k for k in axes if k in sweep.seed_keys or k == "seed"]
  if clash:
    raise SweepError(f"axes {clash} clash with the seeds (seed_keys, or the `seed=` part of "
                     "run names); set seeds with seeds=(...) and seed_keys=(...) instead")
  short = short_names(axes)
  runs, by_name = [], {}
  for point in points:
    if not isinstance(point, dict):
      raise SweepError(f"a point must be a dict of {{config key: value}}, got {point!r}")
    values = {k: _value(v) for k, v in point.items()}
    extra = dict(sweep.derived(dict(values))) if sweep.derived else {}
    for seed in sweep.seeds:
      labels = {k: render(point[k]) for k in axes if k in point}
      name = ",".join([f"{short[k]}={labels[k]}" for k in labels] + [f"seed={seed}"])
      if len(name) > _MAX_NAME:
        raise SweepError(f"run name longer than {_MAX_NAME} characters: {name[:80]}...; label "
                         "long values with named('short', value)")
      if name in by_name:
        raise SweepError(f"two points render to the same run name {name!r}: "
                         f"{by_name[name]} and {values}; give them distinct values or labels "
                         "(named)")
      by_name[name] = values
      overrides = {**sweep.base, **values, **extra, **{k: int(seed) for k in sweep.seed_keys}}
      argv = [f"--config.{k}={config_arg(v)}" for k, v in overrides.items()]
      try:
        # Resolved from the very arguments the trainer will get.
        config = config_lib.from_args(sweep.config, argv)
        total_steps, _, _ = config_lib.durations(config)
      except ConfigError as e:
        raise ConfigError(f"run {name}: {e}") from None
      runs.append(Run(name, values, labels, int(seed), overrides, argv, config, total_steps))
  return runs


def config_arg(value: Any) -> str:
  """A value as the trainer's `--config.KEY=VALUE` parses it back: a Python literal, or a bare
  string when that reads back as the same string (`--config.loss=softmax`)."""
  if isinstance(value, str) and config_lib.parse_value(value) == value:
    return value
  return repr(value)


def trainer_command(run_dir: str, config: str, argv: Sequence[str],
                    python: str = sys.executable) -> list[str]:
  """The trainer's command line for one run."""
  return [python, "-m", "big_vision_lite.train", "--config", config, "--workdir", run_dir,
          *argv]


# --- The sweep directory: the manifest and each run's state.


def _jsonable(v: Any) -> Any:
  return json.loads(json.dumps(v, default=str))


def write_manifest(directory: str, spec: str, sweep: Sweep, runs: list[Run]) -> str:
  """Writes DIR/sweep.json: the expanded runs, for the report and the SLURM tasks."""
  axes = axes_of(sweep)
  plot_x = sweep.plot_x
  if plot_x is not None and plot_x not in axes:
    raise SweepError(f"plot_x={plot_x!r} is not an axis of the sweep ({axes})")
  manifest = {
      "sweep": spec, "config": sweep.config, "description": sweep.description,
      "axes": short_names(axes), "plot_x": plot_x, "seeds": list(sweep.seeds),
      "seed_keys": list(sweep.seed_keys), "metrics": list(sweep.metrics), "env": sweep.env,
      "runs": [{"name": r.name, "point": _jsonable(r.point), "labels": r.labels,
                "seed": r.seed, "overrides": _jsonable(r.overrides), "argv": r.argv,
                "total_steps": r.total_steps} for r in runs],
  }
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, MANIFEST)
  _write_json(path, manifest)
  return path


def read_manifest(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise SweepError(f"{path} not found: {directory} is not a sweep directory (run "
                     "`python -m big_vision_lite.sweep SWEEP.py --workdir DIR` first)")
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj: Any) -> None:
  files.write_atomic(path, json.dumps(obj, indent=1) + "\n")


@dataclasses.dataclass
class Status:
  """Where a run stands: 'finished', 'failed' (its last attempt), 'unfinished' (started, or
  interrupted: resumable) or 'pending' (never started)."""

  state: str
  step: int | None = None        # The last step in metrics.jsonl.
  detail: str = ""
  seconds: float = 0.0           # Wall time over all attempts.
  checkpoint: int | None = None  # The newest committed checkpoint: where a resume starts.


def last_step(run_dir: str) -> int | None:
  """The last step in the run's metrics.jsonl (None: no rows yet, or unreadable)."""
  if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
    return None
  try:
    rows = metrics.read(run_dir)
  except errors.Error:
    return None
  return rows[-1]["step"] if rows else None


def attempts(run_dir: str) -> list[dict[str, Any]]:
  """The run's attempts, oldest first (a line cut short by a crash is left out)."""
  path = os.path.join(run_dir, ATTEMPTS)
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except ValueError:
        pass
  return out


def run_status(run_dir: str, total_steps: int) -> Status:
  """A run is finished only if done.json (written after the trainer exited 0) says so for
  this run length and metrics.jsonl does reach the final step."""
  step = last_step(run_dir)
  tries = attempts(run_dir)
  seconds = sum(a.get("seconds", 0.0) for a in tries)
  checkpoint = ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints")).latest_step()
  done_path = os.path.join(run_dir, DONE)
  if os.path.exists(done_path):
    try:
      with open(done_path) as f:
        done = json.load(f)
    except ValueError:
      done = {}
    if done.get("total_steps") == total_steps and step == total_steps:
      return Status("finished", step, "", seconds, checkpoint)
  if tries and tries[-1].get("exit_code") not in (0, 75, None):  # None: exit not seen.
    return Status("failed", step, tries[-1].get("reason", ""), seconds, checkpoint)
  if step is not None or tries or checkpoint is not None:
    return Status("unfinished", step, "", seconds, checkpoint)
  return Status("pending")


def describe_exit(code: int) -> str:
  """'exit 3 (non-finite loss)', 'killed by SIGKILL', ..."""
  if code < 0:
    import signal  # pylint: disable=import-outside-toplevel
    try:
      return f"killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"killed by signal {-code}"
  meaning = {1: "crashed", 2: "config, data, checkpoint or workdir problem",
             3: "non-finite loss", 4: "checkpoint write failed",
             75: "interrupted after saving: resumable"}.get(code)
  return f"exit {code}" + (f" ({meaning})" if meaning else "")


def record_attempt(run_dir: str, total_steps: int, exit_code: int | None, seconds: float,
                   started: float, cpu_seconds: float | None = None, reason: str = "") -> Status:
  """Appends the attempt (wall and, if known, CPU seconds) to attempts.jsonl and, if the
  trainer exited 0 and its metrics reach the final step, writes done.json; the attempt is no
  longer under way (RUNNING is removed). `exit_code` None: not seen (`reason` says why).
  Returns the run's status afterwards."""
  step = last_step(run_dir)
  if exit_code == 0 and step != total_steps:
    # The trainer believes it finished, but the metrics cannot show it: never call it done.
    reason = (f"the trainer exited 0 but {run_dir}/metrics.jsonl ends at step {step}, not "
              f"{total_steps}; its final metrics are lost: delete {run_dir} and run the sweep "
              "again to retrain it")
    exit_code = 1
  elif exit_code not in (0, 75, None):
    reason = f"{describe_exit(exit_code)}: see {os.path.join(run_dir, LOG)}"
  row = {"started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
         "seconds": round(seconds, 2), "exit_code": exit_code, "step": step,
         "checkpoint": ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints")).latest_step()}
  if cpu_seconds is not None:
    row["cpu_seconds"] = round(cpu_seconds, 2)
  if reason:
    row["reason"] = reason
  with open(os.path.join(run_dir, ATTEMPTS), "a") as f:
    f.write(json.dumps(row) + "\n")
  if os.path.exists(os.path.join(run_dir, RUNNING)):
    os.remove(os.path.join(run_dir, RUNNING))
  if exit_code == 0:
    total = sum(a.get("seconds", 0.0) for a in attempts(run_dir))
    _write_json(os.path.join(run_dir, DONE), {
        "total_steps": total_steps, "seconds": round(total, 2),
        "finished": datetime.datetime.now().isoformat(timespec="seconds")})
  return run_status(run_dir, total_steps)


def begin_attempt(run_dir: str, pid: int, started: float) -> None:
  """Marks an attempt as under way (DIR/<run>/attempt.json: the trainer's pid, when it started),
  so that one whose runner is killed is still recorded (`recover_attempt`)."""
  _write_json(os.path.join(run_dir, RUNNING), {"pid": pid, "started": started,
                                               "runner": os.getpid()})


def recover_attempt(run_dir: str, total_steps: int, wait_sec: float = 600.0,
                    poll_sec: float = 0.5) -> Status | None:
  """Records the attempt a killed runner left under way (None if there is none): waits (up to
  `wait_sec`) for its trainer, which the runner's death asked to save and stop, to end; its
  exit is read from the end of its log: 75 after its `stopped:` line, else not known."""
  path = os.path.join(run_dir, RUNNING)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      running = json.load(f)
  except ValueError:  # Cut short by the crash: nothing to go by but the log.
    running = {"pid": None, "started": os.path.getmtime(path)}
  pid, deadline = running.get("pid"), time.monotonic() + wait_sec
  if pid and _is_trainer_of(pid, run_dir):
    print(f"waiting for pid {pid}, the trainer of {run_dir} started by a runner that was "
          "killed, to save and stop", flush=True)
    while _is_trainer_of(pid, run_dir) and time.monotonic() < deadline:
      time.sleep(poll_sec)
  log = os.path.join(run_dir, LOG)
  tail = ""
  if os.path.exists(log):
    with open(log, errors="replace") as f:
      tail = f.read().rsplit("\n=== ", 1)[-1]
  lines = [line for line in tail.splitlines() if line.strip()]
  code = 75 if any(line.startswith("stopped: ") for line in lines) else None
  ended = os.path.getmtime(log) if os.path.exists(log) else time.time()
  last = lines[-1][:200] if lines else "(empty)"
  reason = "" if code == 75 else (f"the sweep runner was killed during this attempt and its "
                                  f"trainer's exit was not seen; its log ends with: {last}")
  return record_attempt(run_dir, total_steps, code, max(ended - running["started"], 0.0),
                        running["started"], reason=reason)


def _is_trainer_of(pid: int, run_dir: str) -> bool:
  """Process `pid` is alive and its command line names `run_dir` (not a reused pid)."""
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return run_dir.encode() in f.read()
  except OSError:
    return False


def config_differences(run_dir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Keys whose value in the run's config.json (written by the trainer when it started)
  differs from `config`; empty if the run never started."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    try:
      old = json.load(f)
    except ValueError:
      return []  # Cut short by a crash: the trainer rewrites it.
  return sorted(config_lib.differences(old, json.loads(config_lib.to_json(config))))
