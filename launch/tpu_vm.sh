#!/usr/bin/env bash
# Cloud TPU VM (one host, e.g. v5litepod-8, or a multi-host slice, e.g. v4-32),
# driven from your workstation with gcloud. Every worker gets the same code and
# runs the same command; on TPU jax.distributed.initialize() finds the other
# workers itself, and the mesh spans all chips of the slice.
#
# Usage (from the repo root, with gcloud authenticated):
#   TPU_NAME=my-tpu ZONE=us-central2-b launch/tpu_vm.sh setup
#   TPU_NAME=my-tpu ZONE=us-central2-b INITS=16 launch/tpu_vm.sh run [CONFIG] [WORKDIR] [--config.KEY=VALUE ...]
#   setup  copies the tracked files of this checkout to ~/distill_jax on every worker and
#          runs `pip install -e . "jax[tpu]"` there.
#   run    starts the CLI on every worker at once (--worker=all).
# Env: TPU_NAME, ZONE (required), PROJECT (default: gcloud's), REMOTE_DIR (default
# distill_jax, relative to the remote home), CONFIG, WORKDIR (default runs/tpu),
# INITS (outer.inits_per_step: set it to a multiple of the chip count, e.g. 4 on
# v4-8, 16 on v4-32; outer.real_batch_size must be one too), PYTHON (default python3).
# Data: the workers need it too: pass --config.data_dir=hub (Hugging Face, needs
# internet on the VM) or copy ../shared/data and pass --config.data_dir=PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
REMOTE_DIR=${REMOTE_DIR:-distill_jax}
PYTHON=${PYTHON:-python3}
gcloud_args=(compute tpus tpu-vm)
target=("$TPU_NAME" "--zone=$ZONE" ${PROJECT:+"--project=$PROJECT"})

on_all_workers() {  # on_all_workers COMMAND: runs it on every worker, in parallel
  gcloud "${gcloud_args[@]}" ssh "${target[@]}" --worker=all --command="$1"
}

action=${1:-}
shift || true
case $action in
  setup)
    archive=$(mktemp -t distill_jax.XXXXXX.tgz)
    git ls-files -z | tar --null -T - -czf "$archive"
    gcloud "${gcloud_args[@]}" scp "${target[@]}" --worker=all "$archive" "$TPU_NAME:distill_jax.tgz"
    rm -f "$archive"
    on_all_workers "mkdir -p $(printf %q "$REMOTE_DIR") && tar -xzf distill_jax.tgz -C $(printf %q "$REMOTE_DIR") && \
      cd $(printf %q "$REMOTE_DIR") && $PYTHON -m pip install -q -e . 'jax[tpu]'"
    ;;
  run)
    DEFAULT_RUN_NAME=tpu
    source launch/common.sh
    args=(-m distill_jax.main --config="$CONFIG" --workdir="$WORKDIR"
          --config.parallel.distributed=True --config.parallel.num_devices=0
          ${INITS:+"--config.outer.inits_per_step=$INITS"} "${EXTRA_ARGS[@]}")
    on_all_workers "cd $(printf %q "$REMOTE_DIR") && $PYTHON $(printf '%q ' "${args[@]}")"
    ;;
  *)
    echo "usage: TPU_NAME=... ZONE=... $0 setup | run [CONFIG] [WORKDIR] [--config.KEY=VALUE ...]" >&2
    exit 2
    ;;
esac
