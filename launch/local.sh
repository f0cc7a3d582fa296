#!/usr/bin/env bash
# Single machine, all local accelerators (or the CPU): one process drives every local device.
#   launch/local.sh configs/siglip_shapes.py /tmp/siglip_shapes [--config.KEY=VALUE ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
shift 2
exec python -m big_vision_lite.train --config "$config" --workdir "$workdir" "$@"
