"""NaFlex vs squashing to a square on non-square shapes images, at the same token count.

  python benchmarks/naflex_shapes.py --out /tmp/naflex_shapes [--seeds 0 1 2] [--steps 1100]

For each seed, trains configs/siglip_shapes.py twice on shapes canvases of aspect ratio 1:2 to
2:1 (input.data.aspect=2): the square model sees every image squashed to 48 x 48 px (9 patches
of 16), the NaFlex model (model.image.naflex=True, input.seq_lengths=(9,)) sees it resized
with its aspect ratio kept to at most 9 patches. Then both classify the same non-square test
images zero-shot (shape, colour, position; each model with its own preprocessing). Seeds
change the parameter init and the training stream (config.seed, input.data.seed); the test
images are the same for every run.
"""

import argparse
import os
import statistics
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from big_vision_lite import config as config_lib
from big_vision_lite import train, weights
from big_vision_lite.data import ops, shapes
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.evaluators import prompts, zeroshot
from big_vision_lite.models.two_towers import TwoTowers

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "siglip_shapes.py")
TASKS = ("shapes_shape", "shapes_color", "shapes_position")
ASPECT, SIZE, PATCH, TOKENS = 2.0, 48, 16, 9


def overrides(mode: str, seed: int, steps: int) -> list[str]:
  common = [f"--config.seed={seed}", f"--config.input.data.seed={seed}",
            f"--config.input.data.aspect={ASPECT}", f"--config.total_steps={steps}",
            "--config.evals={}", f"--config.ckpt_steps={steps}"]
  if mode == "naflex":
    common += ["--config.model.image.naflex=True", f"--config.input.seq_lengths=({TOKENS},)"]
  return common


def test_images(task: str, count: int, mode: str):
  """The task's non-square test images (data seed 0), preprocessed as `mode` trains, and labels."""
  examples, labels = zip(*[shapes.draw_task(task, 0, "test", i, SIZE, aspect=ASPECT)
                           for i in range(count)])
  if mode == "naflex":
    rows = [ops.naflex_image(e["image"], PATCH, TOKENS) for e in examples]
    images = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    images["patches"] = ops.value_range(images["patches"])
  else:
    images = ops.value_range(np.stack([ops.OPS["resize"](SIZE)({"image": e["image"]}, None)
                                       ["image"] for e in examples]))
  return images, np.asarray(labels)


def zero_shot(config, params, mode: str, count: int) -> dict[str, float]:
  model = TwoTowers(**config.model.to_dict())
  apply = jax.jit(model.apply)
  out = {}
  for task in TASKS:
    names = shapes.task_classnames(task)
    _, tokens = zeroshot.prompt_tokens(task, names, prompts.templates_for(task, "clip"), False,
                                       config.input.tokenizer or tok_lib.SHAPES_MODEL,
                                       config.model.text.max_len)
    ztxt = np.asarray(apply({"params": params}, None, tokens)[1])
    classes = zeroshot.classifier_weights(ztxt, len(names))
    images, labels = test_images(task, count, mode)
    zimg = np.asarray(apply({"params": params}, images, None)[0])
    out[task] = float(np.mean(np.argmax(zimg @ classes.T, axis=1) == labels))
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default="/tmp/naflex_shapes")
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--steps", type=int, default=1100)
  p.add_argument("--examples", type=int, default=512, help="test images per task")
  args = p.parse_args()
  results = {"square": [], "naflex": []}
  for seed in args.seeds:
    for mode in results:
      workdir = os.path.join(args.out, f"{mode}_{seed}")
      argv = ["--config", CONFIG, "--workdir", workdir, *overrides(mode, seed, args.steps)]
      train.main(argv)
      config = config_lib.from_args(CONFIG, overrides(mode, seed, args.steps))
      params = weights.load_params(workdir, config.model.to_dict())
      acc = zero_shot(config, params, mode, args.examples)
      results[mode].append(acc)
      print(f"seed {seed} {mode}: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()),
            flush=True)
  print(f"\nzero-shot top-1 on {args.examples} test images per task, aspect 1:{ASPECT:g} to "
        f"{ASPECT:g}:1, {TOKENS} tokens, {args.steps} steps, seeds {args.seeds} (mean +- std):")
  print("| preprocessing | " + " | ".join(TASKS) + " |")
  print("|---|" + "---|" * len(TASKS))
  for mode, runs in results.items():
    cells = []
    for task in TASKS:
      v = [r[task] for r in runs]
      sd = statistics.stdev(v) if len(v) > 1 else 0.0
      cells.append(f"{statistics.mean(v):.3f} +- {sd:.3f}")
    print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
