# Shared by the launch scripts (sourced, not run): the CONFIG/WORKDIR convention.
# Leading positional arguments set CONFIG then WORKDIR (else the environment, else
# the defaults); everything from the first --flag on is passed to the CLI unchanged.
#   script.sh [CONFIG] [WORKDIR] [--config.KEY=VALUE ...]
# After sourcing: $CONFIG, $WORKDIR, $PYTHON and the pass-through args in EXTRA_ARGS.

CONFIG=${CONFIG:-configs/sst2.py}
WORKDIR=${WORKDIR:-runs/${DEFAULT_RUN_NAME:-run}}
PYTHON=${PYTHON:-python}
if [[ $# -gt 0 && $1 != -* ]]; then CONFIG=$1; shift; fi
if [[ $# -gt 0 && $1 != -* ]]; then WORKDIR=$1; shift; fi
EXTRA_ARGS=("$@")
if [[ ! -f $CONFIG ]]; then
  echo "error: config file $CONFIG not found (run from the repo root or pass e.g. configs/sst2.py)" >&2
  exit 2
fi
