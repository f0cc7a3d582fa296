"""Pictures of a run: training curves, evaluation metrics over steps, embedding PCA, similarities.

  python -m big_vision_lite.tools.plot --workdir DIR [--step N] [--config F]

Writes under DIR/plots/:
  training_curves.png    loss, temperature t, bias b and learning rate against step
  eval_metrics.png       every evaluation metric against step (in-training and standalone)
  pca_<eval>.png         2-D PCA of a zero-shot set's image embeddings coloured by class, with
                         each class's text classifier as a labelled star
  similarity_<eval>.png  cosine similarity of the first images of a retrieval set with their
                         first captions (image thumbnails down the side, captions along the top)
The embedding plots read DIR/embeddings/<step>/ (written by `evaluate --export_embeddings`);
when that is missing, they are exported first from the newest (or `--step`) checkpoint.
"""

import argparse
import collections
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from big_vision_lite import metrics  # pylint: disable=wrong-import-position

CURVES = (("train/loss", "loss"), ("train/t", "temperature t"), ("train/b", "bias b"),
          ("train/lr", "learning rate"))
EVAL_PREFIXES = ("zeroshot/", "retrieval/", "fewshot/")


def save_figure(fig, path: str) -> str:
  """Writes the figure (tight layout, 110 dpi) and closes it; returns the path."""
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def training_curves(rows: list[dict], path: str) -> str:
  """2x2 panels of loss, t, b and lr against step."""
  fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
  for ax, (key, title) in zip(axes.flat, CURVES):
    points = [(r["step"], r[key]) for r in rows if key in r]
    if points:
      ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
    else:
      ax.text(0.5, 0.5, f"no {key} logged", ha="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0, 0].set_yscale("log" if all(r.get("train/loss", 1) > 0 for r in rows) else "linear")
  return save_figure(fig, path)


def eval_series(rows: list[dict], workdir: str) -> dict[str, dict[str, list]]:
  """{'zeroshot/shapes_shape': {'top1': [(step, value), ...]}} from metrics.jsonl and eval/*.json."""
  points = collections.defaultdict(dict)  # (group, metric) -> {step: value}
  standalone = []
  for path in glob.glob(os.path.join(workdir, "eval", "*.json")):
    with open(path) as f:
      result = json.load(f)
    standalone.append({"step": result["step"], **result["metrics"]})
  for row in rows + standalone:
    for key, value in row.items():
      if key.startswith(EVAL_PREFIXES):
        group, _, metric = key.rpartition("/")
        points[(group, metric)][row["step"]] = value
  out = collections.defaultdict(dict)
  for (group, metric), by_step in points.items():
    out[group][metric] = sorted(by_step.items())
  return dict(out)


def eval_metrics(series: dict[str, dict[str, list]], path: str) -> str | None:
  """One panel per evaluation (dataset), one line per metric; few-shot with a std band."""
  if not series:
    return None
  groups = sorted(series)
  cols = min(3, len(groups))
  rows = -(-len(groups) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
  for ax, group in zip(axes.flat, groups):
    for metric, pts in sorted(series[group].items()):
      if metric.endswith("_std"):
        continue
      steps, values = map(np.asarray, zip(*pts))
      ax.plot(steps, values, marker="o", ms=3, label=metric)
      std = dict(series[group].get(metric + "_std", []))
      if std:
        s = np.array([std.get(int(t), 0.0) for t in steps])
        ax.fill_between(steps, values - s, values + s, alpha=0.2)
    ax.set_title(group)
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(groups):]:
    ax.axis("off")
  return save_figure(fig, path)


def pca_2d(*arrays: np.ndarray) -> list[np.ndarray]:
  """Projects each array onto the top-2 principal axes of all of them together."""
  allx = np.concatenate(arrays).astype(np.float64)
  mean = allx.mean(axis=0)
  _, _, vt = np.linalg.svd(allx - mean, full_matrices=False)
  return [(a - mean) @ vt[:2].T for a in arrays]


def embedding_pca(emb: dict[str, np.ndarray], title: str, path: str) -> str:
  """Image embeddings coloured by class and the class text embeddings as labelled stars."""
  img, txt = pca_2d(emb["image_embeddings"], emb["class_embeddings"])
  names = [str(n) for n in emb["classnames"]]
  cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
  fig, ax = plt.subplots(figsize=(7.5, 6.5))
  for c, name in enumerate(names):
    colour = cmap(c % cmap.N)
    sel = emb["labels"] == c
    ax.scatter(img[sel, 0], img[sel, 1], s=9, color=colour, alpha=0.55)
    ax.scatter(txt[c, 0], txt[c, 1], s=260, marker="*", color=colour, edgecolor="black",
               linewidth=0.8, zorder=3)
    ax.annotate(name, txt[c], xytext=(6, 6), textcoords="offset points", fontsize=9,
                weight="bold", zorder=4)
  ax.set_title(f"{title}: PCA of image embeddings (dots) and class text embeddings (stars)",
               fontsize=10)
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  ax.grid(alpha=0.3)
  return save_figure(fig, path)


def similarity_matrix(emb: dict[str, np.ndarray], title: str, path: str, count: int = 12) -> str:
  """Cosine similarities of the first `count` images with each one's first caption."""
  owner = emb["caption_image"]
  firsts = [int(np.flatnonzero(owner == i)[0])
            for i in range(min(count, len(emb["image_embeddings"])))]
  n = len(firsts)
  sim = emb["image_embeddings"][:n] @ emb["text_embeddings"][firsts].T
  previews = emb.get("preview_images")
  fig = plt.figure(figsize=(2.2 + 0.75 * n, 2.6 + 0.62 * n))
  ax = fig.add_axes([0.16, 0.05, 0.8, 0.66])
  im = ax.imshow(sim, cmap="viridis")
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
              color="white" if sim[i, j] < sim.max() - 0.5 * np.ptp(sim) else "black")
  ax.set_xticks(range(n))
  ax.set_xticklabels([str(emb["captions"][j]) for j in firsts], rotation=55, ha="left",
                     fontsize=8)
  ax.xaxis.tick_top()
  ax.set_yticks(range(n))
  ax.set_yticklabels([f"image {i}" for i in range(n)], fontsize=7)
  if previews is not None:
    box = ax.get_position()
    for i in range(min(n, len(previews))):  # A thumbnail left of each row.
      h = box.height / n
      thumb = fig.add_axes([box.x0 - 0.11, box.y1 - (i + 1) * h, 0.06, h * 0.92])
      thumb.imshow(previews[i])
      thumb.axis("off")
  fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="cosine similarity")
  fig.suptitle(f"{title}: image-caption similarity (diagonal = matching pair)", y=0.995,
               fontsize=10)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _load_exports(directory: str) -> dict[str, dict[str, np.ndarray]]:
  out = {}
  for sub in sorted(glob.glob(os.path.join(directory, "*", ""))):
    out[os.path.basename(os.path.dirname(sub))] = {
        os.path.basename(f)[:-4]: np.load(f) for f in glob.glob(os.path.join(sub, "*.npy"))}
  return out


def main(argv: list[str] | None = None) -> list[str]:
  """Writes the plots; returns their paths."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None, help="checkpoint for embedding plots (default: newest)")
  p.add_argument("--config", default=None, help="config for exporting embeddings (default: WORKDIR/config.json)")
  args = p.parse_args(argv)
  workdir = os.path.abspath(args.workdir)
  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  rows = metrics.read(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else []
  written = [training_curves(rows, os.path.join(out_dir, "training_curves.png"))]
  written.append(eval_metrics(eval_series(rows, workdir), os.path.join(out_dir, "eval_metrics.png")))

  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    exported = os.path.join(workdir, "embeddings")
    steps = lambda: sorted(int(d) for d in os.listdir(exported) if d.isdigit()) if os.path.isdir(
        exported) else []
    step = args.step
    if (step is None and not steps()) or (step is not None and step not in steps()):
      from big_vision_lite import evaluate  # pylint: disable=import-outside-toplevel
      evaluate.main(["--workdir", workdir, "--export_embeddings"] +
                    (["--step", str(step)] if step is not None else []) +
                    (["--config", args.config] if args.config else []))
    step = step if step is not None else steps()[-1]
    for name, emb in _load_exports(os.path.join(workdir, "embeddings", str(step))).items():
      title = f"{name} @ step {step}"
      if "class_embeddings" in emb:
        written.append(embedding_pca(emb, title, os.path.join(out_dir, f"pca_{name}.png")))
      elif "caption_image" in emb:
        written.append(similarity_matrix(emb, title, os.path.join(out_dir, f"similarity_{name}.png")))
  written = [w for w in written if w]
  for w in written:
    print(w)
  return written


if __name__ == "__main__":
  main()
