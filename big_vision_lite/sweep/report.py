"""The table and plots of a sweep: each run's final metrics, mean ± std over seeds per point.

  python -m big_vision_lite.sweep.report DIR [--out OUT] [--metrics M1,M2,...]
      [--pair POINT=BASE ...]

Writes to OUT (default DIR):
  results.csv   one row per finished run: its axis values, seed, steps, wall time, final metrics
  results.md    one row per point of the swept axes: mean ± std over seeds and their number;
                then, for each --pair, the paired differences POINT - BASE (the runs of one
                seed share initialisation, data and draws, so a seed's difference is what the
                change of point did to it): mean ± std over the seeds both finished; then the
                runs still missing and why
  metrics.png   each metric against one axis (the sweep's `plot_x`, else the one with most
                values), one line per value of the other axes, error bars = std over seeds
  curves.png    the training curves (loss, t, b, lr against step) of every run, overlaid
On a partial sweep it reports the finished runs and lists the others (unfinished at which step,
failed with which log, or not started).
"""

import argparse
import csv
import dataclasses
import math
import os
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from big_vision_lite import errors, metrics  # pylint: disable=wrong-import-position
from big_vision_lite import sweep as sweep_lib  # pylint: disable=wrong-import-position
from big_vision_lite.tools import plot  # pylint: disable=wrong-import-position

_EVAL_PREFIXES = plot.EVAL_PREFIXES + ("linear_probe/",)


@dataclasses.dataclass
class Result:
  """A finished run: its manifest entry, every metrics.jsonl row, and its final metrics."""

  run: dict[str, Any]
  rows: list[dict[str, Any]]
  final: dict[str, float]
  seconds: float


@dataclasses.dataclass
class Collected:
  manifest: dict[str, Any]
  results: list[Result]
  missing: list[tuple[dict[str, Any], sweep_lib.Status]]
  metrics: list[str]

  @property
  def axes(self) -> dict[str, str]:
    return self.manifest["axes"]  # Key -> short name, in order.

  def point_key(self, run: dict[str, Any]) -> tuple[str, ...]:
    return tuple(run["labels"].get(k, "base") for k in self.axes)

  def points(self) -> list[tuple[str, ...]]:
    """Every point of the sweep (finished or not), in the sweep's order."""
    return list(dict.fromkeys(self.point_key(r) for r in self.manifest["runs"]))


def _final(rows: list[dict[str, Any]]) -> dict[str, float]:
  """Each metric's last logged value."""
  out = {}
  for row in rows:
    out.update({k: v for k, v in row.items() if k != "step"})
  return out


def collect(directory: str, metric_names: list[str] | None = None) -> Collected:
  """Reads the sweep directory: finished runs' metrics, and the status of the others."""
  manifest = sweep_lib.read_manifest(directory)
  results, missing = [], []
  for run in manifest["runs"]:
    run_dir = os.path.join(directory, run["name"])
    status = sweep_lib.run_status(run_dir, run["total_steps"])
    if status.state != "finished":
      missing.append((run, status))
      continue
    rows = metrics.read(run_dir)
    results.append(Result(run, rows, _final(rows), status.seconds))
  names = metric_names or manifest["metrics"]
  if not names and results:  # Every evaluation metric of the first finished run.
    names = sorted(k for k in results[0].final if k.startswith(_EVAL_PREFIXES) and
                   not k.endswith("_std"))
  return Collected(manifest, results, missing, list(names))


def _stats(values: list[float]) -> tuple[float, float, int]:
  """(mean, sample standard deviation (NaN for one value), count)."""
  a = np.asarray(values, np.float64)
  if not a.size:
    return math.nan, math.nan, 0
  return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan, int(a.size)


def table(c: Collected) -> list[dict[str, Any]]:
  """One entry per point: its labels, steps and {metric: (mean, std, n)}."""
  by_point: dict[tuple, list[Result]] = {p: [] for p in c.points()}
  for r in c.results:
    by_point[c.point_key(r.run)].append(r)
  steps = {c.point_key(r): r["total_steps"] for r in c.manifest["runs"]}
  return [{"labels": point, "steps": steps[point], "n": len(results),
           "stats": {m: _stats([r.final[m] for r in results if m in r.final]) for m in c.metrics}}
          for point, results in by_point.items()]


def _fmt(mean: float, std: float, n: int, sign: bool = False) -> str:
  if n == 0:
    return "–"
  text = (f"{mean:+.3f}" if sign else f"{mean:.3f}") if math.isfinite(mean) else "nan"
  return text + (f" ± {std:.3f}" if n > 1 and math.isfinite(std) else "")


def write_csv(c: Collected, path: str) -> str:
  shorts = list(c.axes.values())
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", *shorts, "seed", "steps", "seconds", *c.metrics])
    for r in c.results:
      w.writerow([r.run["name"], *c.point_key(r.run), r.run["seed"], r.run["total_steps"],
                  round(r.seconds, 1), *[repr(r.final[m]) if m in r.final else ""
                                         for m in c.metrics]])
  return path


def paired(c: Collected, point: str, base: str) -> tuple[int, dict[str, tuple]]:
  """(seeds, {metric: (mean, std, n)}) of the per-seed differences point - base; points are
  named by their labels joined with ',' (as in results.md's first columns)."""
  by = {(",".join(c.point_key(r.run)), r.run["seed"]): r.final for r in c.results}
  known = {p for p, _ in by} | {",".join(p) for p in c.points()}
  for name in (point, base):
    if name not in known:
      raise sweep_lib.SweepError(f"--pair: no point {name!r} in this sweep; its points: {sorted(known)}")
  seeds = sorted(s for p, s in by if p == point and (base, s) in by)
  stats = {m: _stats([by[(point, s)][m] - by[(base, s)][m] for s in seeds
                      if m in by[(point, s)] and m in by[(base, s)]]) for m in c.metrics}
  return len(seeds), stats


def write_markdown(c: Collected, rows: list[dict[str, Any]], path: str,
                   pictures: list[str], directory: str,
                   pairs: list[tuple[str, str]] = ()) -> str:
  m = c.manifest
  shorts = list(c.axes.values())
  vary_steps = len({r["steps"] for r in rows}) > 1
  head = shorts + (["steps"] if vary_steps else []) + c.metrics + ["seeds"]
  lines = [f"# Sweep `{m['sweep']}`", ""]
  if m.get("description"):
    lines += [m["description"].strip(), ""]
  finished = len(c.results)
  lines += [f"{finished} of {len(m['runs'])} runs finished; seeds {m['seeds']} (setting "
            f"{', '.join(f'`{k}`' for k in m['seed_keys'])}). Config `{_relative(m['config'])}`."]
  if c.results:
    mean_min = sum(r.seconds for r in c.results) / len(c.results) / 60
    lines += [f"Mean wall time of a finished run: {mean_min:.1f} min."]
  where = _relative(directory)
  lines += ["", f"Runs: `python -m big_vision_lite.sweep {m['sweep']} --workdir {where}`; this "
            f"report: `python -m big_vision_lite.sweep.report {where}"
            + "".join(f" --pair {a}={b}" for a, b in pairs) + "`."]
  lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    cells = list(row["labels"]) + ([str(row["steps"])] if vary_steps else [])
    cells += [_fmt(*row["stats"][metric]) for metric in c.metrics] + [str(row["n"])]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Final values; mean ± sample standard deviation over seeds."]
  if pairs:
    lines += ["", "## Paired differences", "",
              "Per seed, the point's final value minus the base point's (same initialisation, "
              "data and draws); mean ± sample standard deviation over the seeds both finished.",
              "", "| point - base | seeds | " + " | ".join(c.metrics) + " |",
              "|---|---|" + "---|" * len(c.metrics)]
    for point, base in pairs:
      n, stats = paired(c, point, base)
      lines.append(f"| {point} - {base} | {n} | " + " | ".join(
          _fmt(*stats[m], sign=True) for m in c.metrics) + " |")
  for picture in pictures:
    lines += ["", f"![{os.path.splitext(picture)[0]}]({picture})"]
  if c.missing:
    lines += ["", f"## Missing ({len(c.missing)} runs)", ""]
    for run, status in c.missing:
      lines.append(f"- `{run['name']}`: {_missing_text(status, run['total_steps'])}")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def _relative(path: str) -> str:
  try:
    rel = os.path.relpath(path)
  except ValueError:
    return path
  return path if rel.startswith("..") else rel


def _missing_text(status: sweep_lib.Status, total_steps: int) -> str:
  if status.state == "pending":
    return "not started"
  saved = (f" (checkpoint at step {status.checkpoint}/{total_steps})"
           if status.checkpoint is not None else "")
  if status.state == "failed":
    return f"failed: {status.detail}{saved}"
  if status.checkpoint is None:
    return f"unfinished, no checkpoint yet (of {total_steps} steps)"
  return f"unfinished, checkpoint at step {status.checkpoint}/{total_steps}"


def _plot_axis(c: Collected) -> str | None:
  if c.manifest.get("plot_x"):
    return c.manifest["plot_x"]
  axes = list(c.axes)
  if not axes:
    return None
  counts = [len({r["labels"].get(k) for r in c.manifest["runs"]}) for k in axes]
  return axes[max(range(len(axes)), key=lambda i: (counts[i], i))]


def _numeric(values: list[Any]) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_metrics(c: Collected, rows: list[dict[str, Any]], path: str) -> str | None:
  """Each metric against the plot axis; one line per value of the other axes."""
  if not c.metrics or not c.results:
    return None
  x_key = _plot_axis(c)
  axes = list(c.axes)
  xi = axes.index(x_key) if x_key else None
  values = {}  # x label -> raw value (for a numeric axis)
  for run in c.manifest["runs"]:
    if xi is not None:
      values.setdefault(c.point_key(run)[xi], run["point"].get(x_key))
  numeric = xi is not None and _numeric(list(values.values()))
  order = list(values) or [""]
  position = {label: (values[label] if numeric else i) for i, label in enumerate(order)}
  cols = min(3, len(c.metrics))
  nrows = -(-len(c.metrics) // cols)
  fig, panels = plt.subplots(nrows, cols, figsize=(4.8 * cols, 3.6 * nrows), squeeze=False)
  others = [k for k in axes if k != x_key]
  for ax, metric in zip(panels.flat, c.metrics):
    lines: dict[tuple, list] = {}
    for row in rows:
      labels = dict(zip(axes, row["labels"]))
      mean, std, n = row["stats"][metric]
      if n == 0:
        continue
      line = tuple(f"{c.axes[k]}={labels[k]}" for k in others)
      x = position[labels[x_key]] if x_key else 0
      lines.setdefault(line, []).append((x, mean, 0.0 if math.isnan(std) else std))
    for line, pts in lines.items():
      pts.sort()
      xs, means, stds = map(np.asarray, zip(*pts))
      # Points of a categorical axis are not joined: no order lies between them.
      ax.errorbar(xs, means, yerr=stds, marker="o", ms=4, capsize=3,
                  linestyle="-" if numeric else "none", label=", ".join(line) or None)
    if numeric:
      positive = [v for v in position.values() if v > 0]
      if len(positive) == len(position) and max(positive) / min(positive) >= 8:
        ax.set_xscale("log", base=2)
      ax.set_xticks(sorted(position.values()))
      ax.set_xticklabels([label for label, _ in sorted(position.items(), key=lambda kv: kv[1])])
    else:
      ax.set_xticks(range(len(order)))
      ax.set_xticklabels(order, rotation=30 if max(map(len, order)) > 6 else 0)
    ax.set_title(metric, fontsize=9)
    ax.set_xlabel(c.axes.get(x_key, "") if x_key else "")
    ax.grid(alpha=0.3)
    if any(line for line in lines):
      ax.legend(fontsize=7)
  for ax in list(panels.flat)[len(c.metrics):]:
    ax.axis("off")
  fig.suptitle(f"{c.manifest['sweep']}: mean ± std over seeds", fontsize=10)
  return plot.save_figure(fig, path)


def plot_curves(c: Collected, path: str) -> str | None:
  """Training curves of every finished run, one colour per point."""
  if not c.results:
    return None
  points = c.points()
  cmap = plt.get_cmap("tab10" if len(points) <= 10 else "tab20")
  fig, panels = plt.subplots(2, 2, figsize=(11, 7))
  labelled = set()
  for r in c.results:
    point = c.point_key(r.run)
    colour = cmap(points.index(point) % cmap.N)
    label = ",".join(f"{s}={v}" for s, v in zip(c.axes.values(), point)) or "run"
    for ax, (key, _) in zip(panels.flat, plot.CURVES):
      pts = [(row["step"], row[key]) for row in r.rows if key in row]
      if pts:
        ax.plot(*zip(*pts), color=colour, alpha=0.75, lw=1,
                label=label if point not in labelled else None)
    labelled.add(point)
  for ax, (key, title) in zip(panels.flat, plot.CURVES):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if key == "train/loss" and all(row.get(key, 1) > 0 for r in c.results for row in r.rows):
      ax.set_yscale("log")
  panels[0, 0].legend(fontsize=7)
  fig.suptitle(f"{c.manifest['sweep']}: every finished run (seeds share a colour)", fontsize=10)
  return plot.save_figure(fig, path)


def write(directory: str, out: str | None = None, metric_names: list[str] | None = None,
          pairs: list[tuple[str, str]] = ()) -> list[str]:
  """Writes results.csv, results.md and the plots to `out` (default: the sweep directory);
  returns their paths."""
  out = out or directory
  os.makedirs(out, exist_ok=True)
  c = collect(directory, metric_names)
  rows = table(c)
  pictures = [plot_metrics(c, rows, os.path.join(out, "metrics.png")),
              plot_curves(c, os.path.join(out, "curves.png"))]
  pictures = [p for p in pictures if p]
  written = [write_csv(c, os.path.join(out, "results.csv")),
             write_markdown(c, rows, os.path.join(out, "results.md"),
                            [os.path.basename(p) for p in pictures], directory, pairs)] + pictures
  print(f"{len(c.results)} of {len(c.manifest['runs'])} runs finished" +
        (f"; missing: {', '.join(r['name'] for r, _ in c.missing)}" if c.missing else ""))
  for path in written:
    print(path)
  return written


def main(argv: list[str] | None = None) -> list[str]:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("directory", help="the sweep's --workdir")
  p.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
  p.add_argument("--metrics", default=None,
                 help="comma-separated metrics (default: the sweep's, else every evaluation's)")
  p.add_argument("--pair", action="append", default=[], metavar="POINT=BASE",
                 help="also tabulate the per-seed differences POINT - BASE (repeatable), e.g. "
                      "--pair locca=siglip")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  names = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
  pairs = []
  for pair in args.pair:
    if pair.count("=") != 1:
      raise sweep_lib.SweepError(f"--pair takes POINT=BASE (point labels as in results.md), got {pair!r}")
    pairs.append(tuple(pair.split("=")))
  return write(os.path.abspath(args.directory), args.out, names, pairs)


if __name__ == "__main__":
  errors.run(main)
