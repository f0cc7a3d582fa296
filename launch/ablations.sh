#!/usr/bin/env bash
# The laptop-scale SigLIP ablations end to end: runs each sweep of configs/sweeps/ (bias and
# temperature init, loss x batch size, chunked vs all-gather loss) under workdirs/ablations/NAME
# with N runs at a time, and writes its report (results.md, results.csv, metrics.png,
# curves.png) to docs/ablations/NAME/. Run from the repository root; running it again skips
# finished runs and resumes the others.
#   launch/ablations.sh [N]        (N: runs at a time, default 2)
set -uo pipefail
parallel=${1:-2}
status=0
for name in bias_temperature loss_batch chunked; do
  python -m big_vision_lite.sweep "configs/sweeps/siglip_$name.py" \
    --workdir "workdirs/ablations/$name" --parallel "$parallel"
  code=$?
  case $code in
    0) ;;
    1) status=1 ;;           # A run failed: report the rest, then say so.
    *) exit "$code" ;;       # Stopped (75: run again to resume) or cannot run (2).
  esac
  python -m big_vision_lite.sweep.report "workdirs/ablations/$name" --out "docs/ablations/$name" \
    || exit $?
done
exit "$status"
