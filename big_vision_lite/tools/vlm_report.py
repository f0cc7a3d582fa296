"""Compares encoders as a VLM's eye: the final vqa accuracies of launch/vlm.sh runs, one
markdown table per stage, mean +- std over seeds, and a bar plot of stage 2 per question type.

  python -m big_vision_lite.tools.vlm_report OUT_SIGLIP OUT_CLIP OUT_RANDOM [--stage 2]
      [--plot docs/vlm.png]

Each OUT is a launch/vlm.sh output directory (named after its encoder): stage 0 in
OUT/stage0, stages 1 and 2 in OUT/seed*/stage{1,2}; each workdir's last metrics.jsonl row with
vqa metrics is its final evaluation. Unfinished runs are left out and the table says how many
seeds each cell has.
"""

import argparse
import glob
import json
import os

import numpy as np

from big_vision_lite.data import instruct


def final_vqa(workdir: str) -> dict[str, float] | None:
  """The last vqa metrics a run wrote, or None."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  last = None
  with open(path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if any(k.startswith("vqa/") for k in row):
        last = {k.split("/")[-1]: v for k, v in row.items() if k.startswith("vqa/")}
  return last


COLUMNS = list(instruct.QUESTION_TYPES) + ["all", "heldout"]


def results(out: str, stage: int) -> list[dict[str, float]]:
  """The final vqa metrics of an encoder's finished runs of `stage` (one per seed)."""
  runs = ([os.path.join(out, "stage0")] if stage == 0
          else sorted(glob.glob(os.path.join(out, "seed*", f"stage{stage}"))))
  return [r for r in map(final_vqa, runs) if r]


def name(out: str) -> str:
  return os.path.basename(os.path.normpath(out))


def stats(rows: list[dict[str, float]], column: str) -> tuple[float, float]:
  """Mean and standard deviation over seeds (0 for one seed)."""
  v = np.array([r[column] for r in rows if column in r])
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def table(outs: list[str], stage: int) -> str:
  """A markdown table: one row per encoder, one column per question type."""
  lines = ["| encoder | seeds | " + " | ".join(COLUMNS) + " |",
           "|---|---|" + "---|" * len(COLUMNS)]
  for out in outs:
    rows = results(out, stage)
    if not rows:
      continue
    cells = []
    for c in COLUMNS:
      mean, std = stats(rows, c)
      cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if len(rows) > 1 else ""))
    lines.append(f"| {name(out)} | {len(rows)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(outs: list[str], path: str) -> str:
  """Grouped bars of stage-2 accuracy per question type, one bar per encoder (error bars: the
  seeds' standard deviation), and each type's blind answer prior (the first encoder's stage 0,
  whose LM never saw an image) as a tick."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  encoders = [(name(o), results(o, 2)) for o in outs]
  encoders = [(n, r) for n, r in encoders if r]
  if not encoders:
    raise SystemExit(f"no finished stage-2 run under {outs}")
  x = np.arange(len(COLUMNS))
  width = 0.8 / len(encoders)
  fig, ax = plt.subplots(figsize=(11, 4))
  for i, (label, rows) in enumerate(encoders):
    means, stds = zip(*(stats(rows, c) for c in COLUMNS))
    ax.bar(x + (i - (len(encoders) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
           label=f"{label} ({len(rows)} seeds)")
  blind = next((r[0] for r in (results(o, 0) for o in outs) if r), None)
  if blind:
    ax.scatter(x, [blind.get(c, np.nan) for c in COLUMNS], marker="_", s=600, color="black",
               zorder=3, label="blind LM (stage 0)")
  ax.set_xticks(x, COLUMNS)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("vqa accuracy (stage 2)")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8, ncol=len(encoders) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.1))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("outs", nargs="+", help="launch/vlm.sh output directories, one per encoder")
  p.add_argument("--stage", type=int, action="append", choices=(0, 1, 2),
                 help="stages to tabulate (repeatable; default 2)")
  p.add_argument("--plot", help="write the stage-2 bar plot to this .png")
  args = p.parse_args()
  for stage in args.stage or [2]:
    print(f"stage {stage}:\n\n{table(args.outs, stage)}\n")
  if args.plot:
    print(f"wrote {plot(args.outs, args.plot)}")


if __name__ == "__main__":
  main()
