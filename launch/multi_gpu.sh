#!/usr/bin/env bash
# One node, all its GPUs, one process: JAX sees every local GPU, the outer step
# is sharded over all of them (parallel.num_devices=0) and no
# jax.distributed.initialize() is needed. Install the GPU build first:
#   pip install -e ".[cuda12]"
#
# Usage: launch/multi_gpu.sh [CONFIG] [WORKDIR] [--config.KEY=VALUE ...]
#   CONFIG  default configs/sst2.py   (or env CONFIG)
#   WORKDIR default runs/multi_gpu    (or env WORKDIR)
#   INITS   θ0 samples per outer step (outer.inits_per_step); default: one per GPU.
#           Must be a multiple of the GPU count, as must outer.real_batch_size
#           (default 64). An explicit --config.outer.inits_per_step=... wins.
#   CUDA_VISIBLE_DEVICES  restricts the GPUs used, as usual.
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX preallocates
#           (JAX's default is 0.75; 0.90 here leaves room for the driver only).
#           Set XLA_PYTHON_CLIENT_PREALLOCATE=false to allocate on demand instead.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_RUN_NAME=multi_gpu
source launch/common.sh

if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
  IFS=, read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"
  NUM_GPUS=${#gpus[@]}
else
  NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
if [[ ${NUM_GPUS:-0} -lt 1 ]]; then
  echo "error: no GPU found (nvidia-smi -L lists none); use launch/local.sh on CPU" >&2
  exit 2
fi
INITS=${INITS:-$NUM_GPUS}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}

echo "multi_gpu: $NUM_GPUS GPUs, outer.inits_per_step=$INITS" >&2
set -x
exec "$PYTHON" -m distill_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --config.parallel.num_devices=0 --config.outer.inits_per_step="$INITS" "${EXTRA_ARGS[@]}"
