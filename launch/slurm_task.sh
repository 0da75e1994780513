#!/usr/bin/env bash
# Run by srun in launch/slurm.sbatch, once per task: picks the GPUs this task
# drives, then execs the command it is given.
#
# JAX's SLURM auto-detection makes task i drive local GPU $SLURM_LOCALID of the
# ones it can see. That is right for one task per GPU with all GPUs visible, but
# not when SLURM has already bound one GPU per task (it is then GPU 0 of one) or
# for one task per node (it should drive all). JAX_LOCAL_DEVICE_IDS overrides it.
set -euo pipefail
if [[ -z ${JAX_LOCAL_DEVICE_IDS:-} ]]; then
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -ra visible <<< "$CUDA_VISIBLE_DEVICES"
    num_visible=${#visible[@]}
  else
    num_visible=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  fi
  tasks_on_node=${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-0}}
  tasks_on_node=${tasks_on_node%%[(,]*}  # "8(x2)" -> 8
  if [[ $num_visible -eq 1 ]]; then
    export JAX_LOCAL_DEVICE_IDS=0
  elif [[ $tasks_on_node == 1 && $num_visible -gt 1 ]]; then
    JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $(( num_visible - 1 )))
    export JAX_LOCAL_DEVICE_IDS
  fi
fi
exec "$@"
