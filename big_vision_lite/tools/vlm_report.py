"""Compares encoders as a VLM's eye: the final vqa accuracies of launch/vlm.sh runs, one
markdown table per stage, mean +- std over seeds.

  python -m big_vision_lite.tools.vlm_report OUT_SIGLIP OUT_CLIP OUT_RANDOM [--stage 2]

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


def table(outs: list[str], stage: int) -> str:
  """A markdown table: one row per encoder, one column per question type."""
  cols = list(instruct.QUESTION_TYPES) + ["all", "heldout"]
  lines = ["| encoder | seeds | " + " | ".join(cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for out in outs:
    runs = ([os.path.join(out, "stage0")] if stage == 0
            else sorted(glob.glob(os.path.join(out, "seed*", f"stage{stage}"))))
    results = [r for r in map(final_vqa, runs) if r]
    if not results:
      continue
    cells = []
    for c in cols:
      v = np.array([r[c] for r in results if c in r])
      cells.append(f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""))
    lines.append(f"| {os.path.basename(os.path.normpath(out))} | {len(results)} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("outs", nargs="+", help="launch/vlm.sh output directories, one per encoder")
  p.add_argument("--stage", type=int, action="append", choices=(0, 1, 2),
                 help="stages to tabulate (repeatable; default 2)")
  args = p.parse_args()
  for stage in args.stage or [2]:
    print(f"stage {stage}:\n\n{table(args.outs, stage)}\n")


if __name__ == "__main__":
  main()
