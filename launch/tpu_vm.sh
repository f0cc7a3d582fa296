#!/usr/bin/env bash
# TPU VM pod slice: runs the same command on every worker of the slice.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/siglip_shapes.py /mnt/shared/run1 [--config.KEY=VALUE ...]
# Assumes the repository is checked out and installed (.venv) at ~/big_vision_lite on every
# worker, e.g. once with:
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all --command \
#     "git clone REPO ~/big_vision_lite && cd ~/big_vision_lite && python3 -m venv .venv && .venv/bin/pip install -e . 'jax[tpu]'"
# --distributed makes JAX detect the slice's workers and coordinator. WORKDIR must be on storage
# every worker sees (a Filestore/NFS mount, or a GCS bucket mounted with gcsfuse).
set -euo pipefail
tpu=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
zone=${2:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
config=${3:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
workdir=${4:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
shift 4
printf -v extra ' %q' "$@"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/big_vision_lite && .venv/bin/python -m big_vision_lite.train --distributed --config $config --workdir $workdir$extra"
