"""Compares ways of adapting one pretrained model to a task its pretraining never labelled.

  python -m big_vision_lite.tools.adaptation --workdir DIR [--task shapes_position] [--steps 1000]

Pretrains `--pretrain_config` (default: the shapes default, configs/siglip_shapes.py) under
DIR/pretrain, or reuses that run if it finished, then adapts it to `--task` (a shapes
classification task) in each regime of REGIMES, each under DIR/<regime>: zero-shot, a linear
probe, LiT (image tower locked, text tower retrained from scratch), classification
fine-tuning of all parameters, of the last two blocks, with LoRA adapters of rank 4 and 16
(each with the head initialised as the zero-shot classifier), and of all parameters with a
zero-initialised head. Writes DIR/results.csv, DIR/results.md (accuracy on the task's test
images, trainable parameters, step time, per-device memory of the update step, wall time) and
a bar chart (--plot, default DIR/adaptation.png). Every regime is a config of the one trainer
(or of the standalone evaluator for the two that train nothing).
"""

import argparse
import csv
import os
import time
from typing import Any

import matplotlib
import numpy as np

from big_vision_lite import config as config_lib
from big_vision_lite import errors, evaluate, job, metrics, train

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=wrong-import-position

TEST_EXAMPLES = 1024  # The task's test images, the same for every regime.


def _zeroshot(task: str) -> dict:
  return {"task": {"type": "zeroshot", "dataset": task, "num_examples": TEST_EXAMPLES}}


def _classify(task: str, head: str, lr: float, **extra) -> dict:
  return dict(objectives={"classify": {"dataset": task, "head_init": head}}, lr=lr,
              input={"data": {"name": "shapes", "task": task}},
              evals={"task": {"type": "classify", "dataset": task,
                              "num_examples": TEST_EXAMPLES}}, **extra)


# name -> (how it runs: 'evaluate' or 'train', config overrides given the task).
REGIMES: dict[str, tuple[str, Any]] = {
    "zero-shot": ("evaluate", lambda task: dict(evals=_zeroshot(task))),
    "linear probe": ("evaluate", lambda task: dict(evals={"task": {
        "type": "linear_probe", "dataset": task, "num_train_examples": 8192,
        "num_examples": TEST_EXAMPLES}})),
    "LiT": ("train", lambda task: dict(
        frozen=("img/.*",), model_load={"dont_load": ("txt/.*", "t", "b")}, lr=1e-3,
        evals=_zeroshot(task))),
    "fine-tune all": ("train", lambda task: _classify(task, "zeroshot", 3e-4)),
    "fine-tune last 2 blocks": ("train", lambda task: _classify(
        task, "zeroshot", 3e-4,
        frozen=("img/embedding/.*", "img/pos_embedding", "img/Transformer/encoderblock_0/.*"))),
    "LoRA r=4": ("train", lambda task: _classify(
        task, "zeroshot", 1e-3, lora={"rank": 4, "alpha": 8.0, "train": ("classifier/.*",)})),
    "LoRA r=16": ("train", lambda task: _classify(
        task, "zeroshot", 1e-3, lora={"rank": 16, "alpha": 32.0, "train": ("classifier/.*",)})),
    "fine-tune all, zero head": ("train", lambda task: _classify(task, "zeros", 3e-4)),
}


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _finished(workdir: str) -> bool:
  """A run whose metrics reached its last step (and so its final evaluation)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return False
  total, _, _ = config_lib.durations(config_lib.from_json(path))
  rows = metrics.read(workdir)
  return bool(rows) and rows[-1]["step"] >= total


def pretrain(config: str, workdir: str) -> float:
  """Trains the pretrained model (unless already done); returns the seconds it took (0 if it
  was there)."""
  if _finished(workdir):
    return 0.0
  start = time.perf_counter()
  train.main(["--config", config, "--workdir", workdir])
  return time.perf_counter() - start


def run_regime(name: str, task: str, steps: int, pretrained: str, workdir: str) -> dict:
  """Runs one regime; returns its row: accuracy, trainable parameters, step time, memory, time."""
  how, overrides = REGIMES[name]
  overrides = {"model_init": os.path.join(pretrained, "checkpoints"), "total_steps": steps,
               "ckpt_steps": steps, "log_training_steps": 25, "eval_steps": steps,
               "schedule": {"warmup_steps": steps // 10, "decay_type": "cosine"},
               **overrides(task)}
  base = os.path.join(pretrained, "config.json")
  argv = [f"--config.{k}={v!r}" for k, v in overrides.items()]
  start = time.perf_counter()
  if how == "evaluate":
    results = evaluate.main(["--config", base, "--workdir", workdir] + argv)
    rows = []
  else:
    results = train.main(["--config", base, "--workdir", workdir] + argv)
    rows = metrics.read(workdir)
  seconds = time.perf_counter() - start
  accuracy = next(v for k, v in results.items() if k.endswith(f"/{task}/top1"))
  first = rows[0] if rows else {}
  step_times = [r["train/step_time"] for r in rows[1:] if "train/step_time" in r]
  return {"regime": name, "accuracy": accuracy,
          "trainable_params": int(first.get("train/params_trainable", 0)),
          "params": int(first.get("train/params", 0)),
          "step_time_ms": 1e3 * float(np.median(step_times)) if step_times else float("nan"),
          "memory_mib": float(first.get("train/memory_per_device_mib", float("nan"))),
          "wall_time_s": seconds}


def markdown(rows: list[dict], task: str, steps: int) -> str:
  lines = [f"| regime ({task}, {steps} steps) | top-1 | trainable parameters | step time | "
           "update-step memory per device | wall time |", "|---|---|---|---|---|---|"]
  for r in rows:
    trainable = (f"{r['trainable_params']:,} ({r['trainable_params'] / r['params']:.1%})"
                 if r["params"] else "0")
    step = f"{r['step_time_ms']:.0f} ms" if np.isfinite(r["step_time_ms"]) else "-"
    memory = f"{r['memory_mib']:.1f} MiB" if np.isfinite(r["memory_mib"]) else "-"
    lines.append(f"| {r['regime']} | {r['accuracy']:.3f} | {trainable} | {step} | {memory} | "
                 f"{metrics.format_duration(r['wall_time_s'])} |")
  return "\n".join(lines)


def plot(rows: list[dict], task: str, path: str) -> None:
  fig, ax = plt.subplots(figsize=(9, 3.8))
  names = [r["regime"] for r in rows]
  bars = ax.bar(range(len(rows)), [r["accuracy"] for r in rows],
                color=["#999999" if not r["params"] else "#4477aa" for r in rows])
  for bar, r in zip(bars, rows):
    ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
            f"{r['accuracy']:.2f}", ha="center", va="bottom", fontsize=8)
  ax.set_xticks(range(len(rows)), names, rotation=25, ha="right", fontsize=8)
  ax.set_ylim(0, 1.08)
  ax.set_ylabel(f"{task} top-1 (test)")
  ax.set_title("Adapting one shapes-pretrained model (grey: no training)", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--task", default="shapes_position", help="a shapes classification task")
  p.add_argument("--steps", type=int, default=1000, help="training steps of each regime")
  p.add_argument("--pretrain_config", default=os.path.join(
      os.path.dirname(__file__), "..", "..", "configs", "siglip_shapes.py"))
  p.add_argument("--regimes", default=None, help="comma-separated subset of the regimes")
  p.add_argument("--plot", default=None, help="the bar chart (default: WORKDIR/adaptation.png)")
  args = p.parse_args(argv)
  names = [n.strip() for n in args.regimes.split(",")] if args.regimes else list(REGIMES)
  unknown = [n for n in names if n not in REGIMES]
  if unknown:
    raise errors.ConfigError(f"unknown regimes {unknown}; known: {list(REGIMES)}")
  workdir = os.path.abspath(args.workdir)
  pretrained = os.path.join(workdir, "pretrain")
  start = time.perf_counter()
  pretrain_s = pretrain(args.pretrain_config, pretrained)
  rows = [run_regime(n, args.task, args.steps, pretrained, os.path.join(workdir, _slug(n)))
          for n in names]
  table = markdown(rows, args.task, args.steps)
  total = time.perf_counter() - start
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + f"\n\nPretraining: {metrics.format_duration(pretrain_s)}; everything: "
            f"{metrics.format_duration(total)}.\n")
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  plot(rows, args.task, args.plot or os.path.join(workdir, "adaptation.png"))
  job.print0(table)
  job.print0(f"pretraining {metrics.format_duration(pretrain_s)}; everything "
             f"{metrics.format_duration(total)}; written under {workdir}")
  return rows


if __name__ == "__main__":
  errors.run(main)
