"""SigLIP vs SigLIP + LocCa on shapes at the same steps, over seeds: trains both variants of
configs/siglip2_shapes.py per seed (skipping runs already finished), then writes a markdown
table (mean +- std over seeds) and a bar plot of every metric.

  python benchmarks/siglip2_shapes.py --workdir DIR [--steps 300] [--batch_size 64] [--seeds 3]
      [--plot docs/siglip2_shapes.png]

Runs are DIR/<variant>_seed<k>/ (a normal training workdir plus results.json).
"""

import argparse
import json
import os
import time

import numpy as np

from big_vision_lite import train

VARIANTS = {"SigLIP": "siglip", "SigLIP + LocCa": "siglip_locca"}
METRICS = {  # column -> result key
    "zero-shot shape": "zeroshot/shapes_shape/top1",
    "zero-shot colour": "zeroshot/shapes_color/top1",
    "zero-shot held-out combos": "zeroshot/shapes_combo_heldout/top1",
    "retrieval img->txt R@1": "retrieval/shapes/img2txt_r@1",
    "retrieval txt->img R@1": "retrieval/shapes/txt2img_r@1",
    "10-shot shape": "fewshot/shapes_shape/10shot",
    "probe size": "linear_probe/shapes_size/top1",
    "probe position": "linear_probe/shapes_position/top1",
    "dense probe acc": "dense_probe/shapes/accuracy",
    "dense probe mIoU": "dense_probe/shapes/mean_iou",
    "referring acc@0.5": "referring/shapes/acc@0.5",
    "captioning exact match": "captioning/shapes/exact_match",
}


def evals(n: int, decoder: bool) -> dict:
  out = dict(
      zeroshot_shape=dict(type="zeroshot", dataset="shapes_shape", num_examples=n),
      zeroshot_color=dict(type="zeroshot", dataset="shapes_color", num_examples=n),
      zeroshot_combo=dict(type="zeroshot", dataset="shapes_combo_heldout", num_examples=n),
      retrieval=dict(type="retrieval", dataset="shapes", num_examples=n),
      fewshot=dict(type="fewshot", dataset="shapes_shape", num_examples=n,
                   num_train_examples=1024, shots=(10,), seeds=3),
      probe_size=dict(type="linear_probe", dataset="shapes_size", num_examples=n,
                      num_train_examples=1024),
      probe_position=dict(type="linear_probe", dataset="shapes_position", num_examples=n,
                          num_train_examples=1024),
      dense_probe=dict(type="dense_probe", dataset="shapes", num_examples=n,
                       num_train_examples=512),
  )
  if decoder:  # SigLIP alone has no decoder to caption or refer with.
    out.update(referring=dict(type="referring", dataset="shapes", num_examples=n),
               captioning=dict(type="captioning", dataset="shapes", num_examples=n))
  return out


def run(workdir: str, variant: str, seed: int, steps: int, batch_size: int, n: int) -> dict:
  path = os.path.join(workdir, f"{variant}_seed{seed}")
  if os.path.exists(os.path.join(path, "results.json")):
    return json.load(open(os.path.join(path, "results.json")))
  argv = ["--config", "configs/siglip2_shapes.py", "--workdir", path, f"--config.seed={seed}",
          f"--config.batch_size={batch_size}", f"--config.total_steps={steps}",
          f"--config.schedule.warmup_steps={steps // 10}", f"--config.eval_steps={steps}",
          f"--config.ckpt_steps={steps}", "--config.log_training_steps=50",
          f"--config.evals={evals(n, variant == 'siglip_locca')!r}"]
  if variant == "siglip":
    argv.append("--config.objectives={'contrastive': {}}")
  start = time.time()
  results = train.main(argv)
  results["wall_s"] = time.time() - start
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results


def table(results: dict[str, list[dict]]) -> str:
  """Markdown: one row per metric, one column per variant (mean +- std over seeds)."""
  names = list(results)
  lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for column, key in METRICS.items():
    cells = []
    for name in names:
      values = [r[key] for r in results[name] if key in r]
      cells.append(f"{np.mean(values):.3f} +- {np.std(values):.3f}" if values else "-")
    lines.append(f"| {column} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(12, 4.5))
  x = np.arange(len(METRICS))
  for i, (name, runs) in enumerate(results.items()):
    means = [np.mean([r[k] for r in runs if k in r]) if any(k in r for r in runs) else 0
             for k in METRICS.values()]
    stds = [np.std([r[k] for r in runs if k in r]) if any(k in r for r in runs) else 0
            for k in METRICS.values()]
    ax.bar(x + (i - 0.5) * 0.4, means, 0.4, yerr=stds, label=name, capsize=2)
  ax.set_xticks(x, list(METRICS), rotation=30, ha="right")
  ax.set_ylim(0, 1)
  ax.legend()
  ax.set_title("shapes: SigLIP vs SigLIP + LocCa (mean and std over seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--num_examples", type=int, default=256, help="test examples per evaluation")
  p.add_argument("--plot", default=None, help="write the bar plot here")
  args = p.parse_args()
  results = {name: [run(args.workdir, variant, seed, args.steps, args.batch_size,
                        args.num_examples) for seed in range(args.seeds)]
             for name, variant in VARIANTS.items()}
  print(table(results))
  for name, runs in results.items():
    print(f"{name}: {np.mean([r['wall_s'] for r in runs]) / 60:.1f} min per run")
  if args.plot:
    plot(results, args.plot)


if __name__ == "__main__":
  main()
