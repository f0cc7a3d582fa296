#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node driving all its GPUs.
#   sbatch --nodes=4 launch/slurm.sh configs/siglip_shapes.py /shared/workdirs/run1 [--config.KEY=VALUE ...]
# One process per GPU instead: sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-task=1 launch/slurm.sh ...
# Every process runs the same command; the trainer sees SLURM_NTASKS > 1 and calls
# jax.distributed.initialize(), which takes the coordinator (first node of the job), the
# process count and each process's id from the SLURM environment. WORKDIR must be on a
# filesystem every node sees: all processes write their shards of each checkpoint.
#
# Preemption and time limits: SLURM sends SIGTERM to every task 5 minutes before the time limit
# (--signal) or when the job is preempted; the trainer finishes its step, saves a checkpoint on
# all processes at the same step and exits with 75. The job then requeues itself, and the same
# command resumes from that checkpoint.
#SBATCH --job-name=big_vision_lite
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
config=${1:?usage: sbatch launch/slurm.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: sbatch launch/slurm.sh CONFIG WORKDIR [overrides...]}
shift 2
status=0
srun --kill-on-bad-exit=1 python -m big_vision_lite.train --config "$config" --workdir "$workdir" "$@" \
  || status=$?
if [ "$status" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "stopped after saving a checkpoint (exit 75): requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
