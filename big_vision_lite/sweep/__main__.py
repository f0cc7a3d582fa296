"""Runs an ablation sweep: every point of its axes, for every seed, one trainer run each.

  python -m big_vision_lite.sweep SWEEP.py[:ARG] --workdir DIR [--parallel N] [--dry_run]
  python -m big_vision_lite.sweep SWEEP.py[:ARG] --workdir DIR --slurm [--submit] [--sbatch KEY=VALUE ...]

Each run trains in DIR/<run>/ (e.g. DIR/loss=softmax,batch_size=64,seed=1/) with its output in
DIR/<run>/log.txt. Running the same command again skips finished runs and resumes the others
from their checkpoints; a failed run is reported with its log and does not stop the others.
Then `python -m big_vision_lite.sweep.report DIR` writes the table and the plots.

Exit codes: 0 every run finished; 1 a run failed (see its log.txt); 2 the sweep cannot run as
written (the message says why); 75 stopped before every run finished (run it again to resume).
"""

import argparse
import os
import shlex
import sys

from big_vision_lite import config as config_lib
from big_vision_lite import errors
from big_vision_lite import sweep as sweep_lib
from big_vision_lite.sweep import runner, slurm


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("sweep", help="a sweep file, path/to/sweep.py[:ARG] (e.g. configs/sweeps/...)")
  p.add_argument("--workdir", required=True, help="the sweep's directory (one subdirectory per run)")
  p.add_argument("--parallel", type=int, default=1,
                 help="runs at a time on this machine, each on 1/N of the GPUs (or CPU cores); "
                      "with --slurm: at most N array tasks at a time")
  p.add_argument("--platform", choices=("auto", "cpu", "gpu"), default="auto",
                 help="what --parallel splits: GPUs if any are visible (auto), or CPU cores")
  p.add_argument("--dry_run", action="store_true",
                 help="list the runs, their overrides and how each config differs from the base")
  p.add_argument("--slurm", action="store_true",
                 help="write DIR/slurm/array.sbatch: a job array, one task per unfinished run")
  p.add_argument("--submit", action="store_true", help="with --slurm: submit it with sbatch")
  p.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                 help="with --slurm: an #SBATCH option, e.g. --sbatch time=2-00:00:00 "
                      "--sbatch partition=gpu (repeatable; overrides the sweep's)")
  return p


def _status_text(status: sweep_lib.Status, total_steps: int) -> str:
  if status.state in ("pending", "finished"):
    return {"pending": "not started"}.get(status.state, status.state)
  saved = (f"checkpoint at step {status.checkpoint}/{total_steps}"
           if status.checkpoint is not None else "no checkpoint")
  return f"{status.state} ({saved})"


def dry_run(spec: str, sweep: sweep_lib.Sweep, runs: list[sweep_lib.Run], directory: str) -> None:
  """Prints every run: its status, its overrides and where its config differs from the base
  (the config file with the sweep's base overrides)."""
  base_argv = [f"--config.{k}={sweep_lib.config_arg(v)}" for k, v in sweep.base.items()]
  base = config_lib.flatten(config_lib.from_args(sweep.config, base_argv).to_dict())
  axes = sweep_lib.axes_of(sweep)
  print(f"sweep {spec}: {len(runs)} runs ({len(runs) // len(sweep.seeds)} points x "
        f"{len(sweep.seeds)} seed{'s' if len(sweep.seeds) > 1 else ''}) in {directory}")
  print(f"config: {sweep.config}")
  print(f"axes: {', '.join(axes)}; seeds {list(sweep.seeds)} set {', '.join(sweep.seed_keys)}")
  if sweep.base:
    print("base overrides: " + " ".join(f"{k}={v!r}" for k, v in sweep.base.items()))
  if sweep.env:
    print("environment: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sweep.env.items()))
  if sweep.metrics:
    print(f"metrics: {', '.join(sweep.metrics)}")
  width = len(str(len(runs) - 1))
  for i, run in enumerate(runs):
    status = sweep_lib.run_status(os.path.join(directory, run.name), run.total_steps)
    examples = run.total_steps * run.config.batch_size
    print(f"\n[{i:{width}d}] {run.name}: {_status_text(status, run.total_steps)}; "
          f"{run.total_steps} steps of batch {run.config.batch_size} ({examples:,} examples)")
    point = [k for k in run.overrides if k not in sweep.base or k in run.point]
    print("  overrides: " + " ".join(f"{k}={run.overrides[k]!r}" for k in point))
    resolved = config_lib.flatten(run.config.to_dict())
    changed = [k for k in resolved if resolved[k] != base.get(k)]
    print("  differs from the base: " + ("; ".join(
        f"{k}: {base.get(k)!r} -> {resolved[k]!r}" for k in changed) or "nothing"))


def main(argv: list[str] | None = None) -> int:
  """Runs (or lists, or writes the SLURM array of) a sweep; returns the exit code."""
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  if args.submit and not args.slurm:
    raise sweep_lib.SweepError("--submit goes with --slurm")
  directory = os.path.abspath(args.workdir)
  sweep = sweep_lib.load(args.sweep)
  runs = sweep_lib.expand(sweep)
  if args.dry_run:
    dry_run(args.sweep, sweep, runs, directory)
    return 0
  lock = runner.SweepLock(directory)
  try:
    changed = {r.name: sweep_lib.config_differences(os.path.join(directory, r.name), r.config)
               for r in runs}
    changed = {name: keys for name, keys in changed.items() if keys}
    if changed:
      shown = "\n".join(f"  {name}: {', '.join(keys[:6])}" + (" ..." if len(keys) > 6 else "")
                        for name, keys in list(changed.items())[:10])
      raise sweep_lib.SweepError(
          f"{len(changed)} run(s) in {directory} were started with a different config than the "
          f"sweep now gives them (differing keys):\n{shown}\nResuming would mix the two. Use "
          "a new --workdir, or delete those run directories to retrain them.")
    sweep_lib.write_manifest(directory, args.sweep, sweep, runs)
    manifest = sweep_lib.read_manifest(directory)
    if args.slurm:
      return _slurm(args, sweep, manifest, directory)
    slots = runner.make_slots(args.parallel, args.platform)
    return runner.run_local(directory, manifest, slots)
  finally:
    lock.release()


def _slurm(args, sweep: sweep_lib.Sweep, manifest: dict, directory: str) -> int:
  todo = [i for i, r in enumerate(manifest["runs"]) if sweep_lib.run_status(
      os.path.join(directory, r["name"]), r["total_steps"]).state != "finished"]
  if not todo:
    print(f"every run of {directory} is finished; nothing to submit")
    return 0
  options = dict(sweep.slurm)
  for item in args.sbatch:
    key, sep, value = item.partition("=")
    if not sep:
      raise sweep_lib.SweepError(f"--sbatch {item!r} should be KEY=VALUE, e.g. time=1-00:00:00")
    options[key.lstrip("-")] = value
  path = slurm.write_array_script(directory, manifest, todo, options,
                                  args.parallel if args.parallel > 1 else None)
  print(f"wrote {path}: {len(todo)} array task(s), one per unfinished run of "
        f"{len(manifest['runs'])}")
  if args.submit:
    print(slurm.submit(path))
  else:
    print(f"submit with: sbatch {path}")
  return 0


if __name__ == "__main__":
  sys.exit(errors.run(main))
