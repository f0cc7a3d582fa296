"""What each of SigLIP 2's added terms contributes, at laptop scale on shapes
(configs/siglip2_shapes.py: batch 128): SigLIP; + LocCa; + LocCa + SILC; + LocCa + SILC + TIPS
(the full recipe); SILC + TIPS without LocCa. Same steps, schedule and seeds everywhere; SILC and
TIPS for the last 20% against the EMA teacher, as in the recipe. Evaluated once, at the end.

  python -m big_vision_lite.sweep configs/sweeps/siglip2_components.py \\
    --workdir workdirs/ablations/siglip2_components --parallel 2
  python -m big_vision_lite.sweep.report workdirs/ablations/siglip2_components \\
    --out docs/ablations/siglip2_components --pair locca=siglip --pair locca+silc=locca \\
    --pair locca+silc+tips=locca+silc --pair silc+tips=siglip

The SigLIP 2 paper has no table that separates these terms; it says LocCa and the
self-distillation terms help localisation and dense features most, zero-shot a little.

Argument: `steps=N` (run length; default the recipe's 1100), `seeds=K` (default 3).
"""

import os

from big_vision_lite import config as config_lib
from big_vision_lite.sweep import Sweep, named

_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("zeroshot/shapes_shape/top1", "zeroshot/shapes_color/top1",
           "zeroshot/shapes_combo_heldout/top1", "retrieval/shapes/img2txt_r@1",
           "retrieval/shapes/txt2img_r@1", "fewshot/shapes_shape/10shot",
           "linear_probe/shapes_size/top1", "linear_probe/shapes_position/top1",
           "dense_probe/shapes/accuracy", "dense_probe/shapes/mean_iou",
           "referring/shapes/acc@0.5")


def get_sweep(arg: str | None = None) -> Sweep:
  args = config_lib.parse_arg(arg, {"steps", "seeds"}, "configs/sweeps/siglip2_components.py")
  recipe = config_lib.load(os.path.join(_DIR, "siglip2_shapes.py"))
  terms = recipe.objectives.to_dict()
  evals = recipe.evals.to_dict()
  evals.pop("captioning")  # Decoding is slow; the referring accuracy reads the decoder.
  evals["fewshot"]["shots"] = (10,)
  without_decoder = {k: v for k, v in evals.items() if v["type"] != "referring"}

  def point(label, names):
    return {"objectives": named(label, {k: terms[k] for k in names})}

  def derived(p):  # The referring evaluator needs the decoder.
    return {"evals": evals if "locca" in p["objectives"] else without_decoder}

  points = [point("siglip", ["contrastive"]),
            point("locca", ["contrastive", "locca"]),
            point("locca+silc", ["contrastive", "locca", "silc"]),
            point("locca+silc+tips", ["contrastive", "locca", "silc", "tips"]),
            point("silc+tips", ["contrastive", "silc", "tips"])]
  steps = int(args.get("steps", recipe.total_steps))
  return Sweep(
      config=os.path.join(_DIR, "siglip2_shapes.py"),
      base={"total_steps": steps, "eval_steps": 1_000_000, "log_training_steps": 25,
            "ckpt_steps": 250, "keep_ckpts": 1,
            "schedule.warmup_steps": max(1, round(steps * recipe.schedule.warmup_steps
                                                  / recipe.total_steps))},
      points=points, seeds=tuple(range(int(args.get("seeds", 3)))),
      seed_keys=("seed", "input.data.seed"), metrics=METRICS, derived=derived,
      plot_x="objectives",
      description="SigLIP 2's terms one by one on shapes (batch 128): SigLIP, +LocCa, "
                  "+LocCa+SILC, +LocCa+SILC+TIPS (the recipe), SILC+TIPS without LocCa; SILC "
                  "and TIPS in the last 20% against the EMA teacher.")
