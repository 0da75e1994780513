# Shared by the launch scripts (sourced, not run): the CONFIG/WORKDIR convention.
# Leading positional arguments set CONFIG then WORKDIR (else the environment, else
# the defaults); everything from the first --flag on is passed to the CLI unchanged.
#   script.sh [CONFIG] [WORKDIR] [--config.KEY=VALUE ...]
# After sourcing: $CONFIG, $WORKDIR, $PYTHON and the pass-through args in EXTRA_ARGS; GLIBC_TUNABLES exported.

CONFIG=${CONFIG:-configs/sst2.py}
WORKDIR=${WORKDIR:-runs/${DEFAULT_RUN_NAME:-run}}
PYTHON=${PYTHON:-python}
# malloc on transparent huge pages (glibc >= 2.35; older ones ignore it): glibc unmaps every block above
# 32 MiB when it is freed, so on CPU each outer step would page-fault XLA's temp buffers in again, 4 KiB at a
# time (benchmarks/results/outer.md). Set GLIBC_TUNABLES yourself to keep your own.
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
if [[ $# -gt 0 && $1 != -* ]]; then CONFIG=$1; shift; fi
if [[ $# -gt 0 && $1 != -* ]]; then WORKDIR=$1; shift; fi
EXTRA_ARGS=("$@")
if [[ ! -f $CONFIG ]]; then
  echo "error: config file $CONFIG not found (run from the repo root or pass e.g. configs/sst2.py)" >&2
  exit 2
fi
