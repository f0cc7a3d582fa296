#!/usr/bin/env bash
# The image tower as a VLM's eye (docs/vlm.md): LLaVA's three stages for one encoder, each
# starting from the previous stage's checkpoint (configs/vlm_shapes.py:STAGE, model_init).
#   [SEEDS="0 1 2"] launch/vlm.sh ENCODER OUT [--config.KEY=VALUE ...]
# ENCODER: the encoder checkpoint (a configs/siglip_shapes.py run's workdir, an Orbax
# checkpoint or a big_vision .npz), or `random` for a random image tower (the floor).
# Stage 0 (the LM on text alone) runs once in OUT/stage0; stages 1 and 2 run for each seed of
# SEEDS (default 0) in OUT/seed$S/stage1 and OUT/seed$S/stage2 (config.seed and the shapes
# data seed). The overrides go to every stage (a CLIP encoder: --config.model.bias_init=None).
# Run from the repository root; running it again resumes unfinished stages. Each stage's final
# evaluation is in its workdir's metrics.jsonl.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: [SEEDS='0 1 2'] launch/vlm.sh ENCODER|random OUT [--config.KEY=VALUE ...]" >&2
  exit 2
fi
encoder=$1 out=$2
shift 2
train() { python -m big_vision_lite.train "$@"; }
init=()
if [ "$encoder" != random ]; then
  init=(--config.model_init="$encoder")
fi
train --config configs/vlm_shapes.py:0 --workdir "$out/stage0" "${init[@]}" "$@"
for seed in ${SEEDS:-0}; do
  seeded=(--config.seed="$seed" --config.input.data.seed="$seed")
  train --config configs/vlm_shapes.py:1 --workdir "$out/seed$seed/stage1" \
    --config.model_init="$out/stage0" "${seeded[@]}" "$@"
  train --config configs/vlm_shapes.py:2 --workdir "$out/seed$seed/stage2" \
    --config.model_init="$out/seed$seed/stage1" "${seeded[@]}" "$@"
done
