#!/usr/bin/env bash
# One process on whatever JAX finds first: the CPU, one GPU or one TPU host.
# Nothing is sharded (parallel.num_devices=1 is the default), so this is
# exactly `python -m distill_jax.main`; it exists so all launchers read alike.
#
# Usage: launch/local.sh [CONFIG] [WORKDIR] [--config.KEY=VALUE ...]
#   CONFIG  default configs/sst2.py   (or env CONFIG)
#   WORKDIR default runs/local        (or env WORKDIR)
# Example: launch/local.sh configs/rotten_tomatoes.py runs/rt --config.inner.steps=30
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_RUN_NAME=local
source launch/common.sh
set -x
exec "$PYTHON" -m distill_jax.main --config="$CONFIG" --workdir="$WORKDIR" "${EXTRA_ARGS[@]}"
