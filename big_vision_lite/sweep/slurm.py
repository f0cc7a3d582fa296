"""A sweep as a SLURM job array: one array task per run, each launched with launch/slurm.sh.

`python -m big_vision_lite.sweep SWEEP.py --workdir DIR --slurm` writes DIR/slurm/array.sbatch,
whose `--array` lists the runs that are not finished (so submitting it again resumes a sweep).
Array task i runs

  python -m big_vision_lite.sweep.slurm DIR RUN_NAME   (run i's name, listed in the script)

which runs `launch/slurm.sh CONFIG DIR/<run i> --config.KEY=VALUE ...` (srun over the task's
nodes) with its output appended to DIR/<run i>/log.txt, and records the attempt as the local
runner does (done.json after exit 0). The array takes launch/slurm.sh's own #SBATCH options,
so a task near its time limit gets SIGTERM, saves, and is requeued to resume. DIR must be on
storage every node sees.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

from big_vision_lite import sweep as sweep_lib
from big_vision_lite.sweep import runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "launch", "slurm.sh")


def launcher_options() -> dict[str, str | None]:
  """launch/slurm.sh's own #SBATCH options (resources, SIGTERM before the time limit, requeue,
  ...; not its job name and output file): an array task gets what `sbatch launch/slurm.sh`
  would. A flag without a value maps to None."""
  options = {}
  with open(LAUNCHER) as f:
    for line in f:
      match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line)
      if match and match.group(1) not in ("job-name", "output"):
        options[match.group(1)] = match.group(2)
  return options


def array_spec(indices: list[int], max_running: int | None = None) -> str:
  """SLURM's --array value: ranges of consecutive indices, e.g. '0-3,7,9-11%4'."""
  parts, start = [], None
  for i, index in enumerate(indices):
    if start is None:
      start = index
    if i + 1 == len(indices) or indices[i + 1] != index + 1:
      parts.append(str(start) if start == index else f"{start}-{index}")
      start = None
  return ",".join(parts) + (f"%{max_running}" if max_running else "")


def write_array_script(directory: str, manifest: dict[str, Any], indices: list[int],
                       options: dict[str, Any], max_running: int | None = None,
                       python: str = sys.executable) -> str:
  """Writes DIR/slurm/array.sbatch running the manifest's runs `indices`; returns its path."""
  if not os.path.exists(LAUNCHER):
    raise sweep_lib.SweepError(f"{LAUNCHER} not found: --slurm needs a checkout of the "
                               "repository (the array tasks run launch/slurm.sh)")
  directory = os.path.abspath(directory)
  out_dir = os.path.join(directory, "slurm")
  os.makedirs(out_dir, exist_ok=True)
  name = "sweep-" + os.path.basename(directory.rstrip("/"))
  options = {"job-name": name, "array": array_spec(indices, max_running),
             "output": os.path.join(out_dir, "%A_%a.out"), **launcher_options(), **options}
  runs = manifest["runs"]
  # Frozen here by name, so that a later change to the sweep cannot shift a queued task.
  names = "\n".join(f"  [{i}]={shlex.quote(runs[i]['name'])}" for i in indices)
  sbatch = "\n".join(f"#SBATCH --{key}" + ("" if value is None else f"={value}")
                     for key, value in options.items())
  script = f"""#!/usr/bin/env bash
# SLURM job array of the sweep {manifest['sweep']}: one task per run, the task index picks
# the run in {os.path.join(directory, sweep_lib.MANIFEST)}. Written by big_vision_lite.sweep --slurm;
# submit with `sbatch {os.path.join(out_dir, 'array.sbatch')}`. Each task runs launch/slurm.sh on
# its run's workdir and appends the output to DIR/<run>/log.txt.
{sbatch}
set -euo pipefail
runs=(
{names}
)
cd {shlex.quote(ROOT)}
export PATH={shlex.quote(os.path.dirname(python))}:"$PATH"  # launch/slurm.sh runs `python`.
exec {shlex.quote(python)} -m big_vision_lite.sweep.slurm {shlex.quote(directory)} "${{runs[$SLURM_ARRAY_TASK_ID]}}"
"""
  path = os.path.join(out_dir, "array.sbatch")
  with open(path, "w") as f:
    f.write(script)
  os.chmod(path, 0o755)
  return path


def submit(path: str) -> str:
  """Submits with sbatch; returns its output (the job id line)."""
  try:
    out = subprocess.run(["sbatch", path], capture_output=True, text=True, check=False)
  except FileNotFoundError:
    raise sweep_lib.SweepError("sbatch not found: run --submit on a SLURM login node, or submit "
                               f"{path} there by hand") from None
  if out.returncode:
    raise sweep_lib.SweepError(f"sbatch {path} failed: {out.stderr.strip() or out.stdout.strip()}")
  return out.stdout.strip()


def run_task(directory: str, name: str) -> int:
  """Runs the manifest's run `name` through launch/slurm.sh; returns its exit code."""
  manifest = sweep_lib.read_manifest(directory)
  by_name = {r["name"]: r for r in manifest["runs"]}
  if name not in by_name:
    raise sweep_lib.SweepError(f"{name!r} is not a run of the sweep in {directory} (was the "
                               "sweep changed after the array was written? write it again)")
  run = by_name[name]
  run_dir = os.path.join(directory, run["name"])
  if sweep_lib.run_status(run_dir, run["total_steps"]).state == "finished":
    print(f"{run['name']} is already finished", flush=True)
    return 0
  command = ["bash", LAUNCHER, manifest["config"], run_dir, *run["argv"]]
  print(f"task {os.environ.get('SLURM_ARRAY_TASK_ID', '-')}: {name} (log: {os.path.join(run_dir, sweep_lib.LOG)})", flush=True)
  started = time.time()
  proc = runner.launch(command, runner.merge_env(os.environ, manifest["env"]),
                       os.path.join(run_dir, sweep_lib.LOG))

  def note(signum, frame):
    # SLURM signals the trainer (srun's step) itself (launch/slurm.sh asks for SIGTERM before
    # the time limit); forwarding a second SIGTERM would make it abort without saving. Stay
    # alive to record the attempt.
    del frame
    print(f"{signal.Signals(signum).name} received: waiting for the trainer to save and stop",
          flush=True)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, note)
  code = proc.wait()
  status = sweep_lib.record_attempt(run_dir, run["total_steps"], code, time.time() - started,
                                    started)
  print(f"{run['name']}: {status.state}" + (f": {status.detail}" if status.detail else ""),
        flush=True)
  return {"finished": 0, "unfinished": 75}.get(status.state, code or 1)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    print("usage: python -m big_vision_lite.sweep.slurm SWEEP_DIR RUN_NAME", file=sys.stderr)
    return 2
  try:
    return run_task(os.path.abspath(argv[0]), argv[1])
  except sweep_lib.SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code


if __name__ == "__main__":
  sys.exit(main())
