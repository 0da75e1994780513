"""distill_jax: dataset distillation for text classification in JAX/Flax."""

import os as _os

__version__ = "0.1.0"


def _xla_cpu_defaults() -> None:
  """XLA:CPU flags the outer step is measured with (benchmarks/results/outer.md).

  - 512-bit vectors on AVX-512 CPUs (XLA vectorises for 256-bit registers by
    default): faster elementwise fusions.
  - Reductions kept out of YNNPACK fusions (jaxlib >= 0.10): there, each
    LayerNorm/softmax row sum of the inner step took 0.1-0.7 ms, ~20% of the
    step; XLA's own reduction emitter is several times faster (the workaround
    of jax-ml/jax#37465).

  Take effect only if JAX's CPU backend is not initialised yet; a flag already
  in XLA_FLAGS wins.
  """
  flags = _os.environ.get("XLA_FLAGS", "")
  extra = []
  if "xla_cpu_prefer_vector_width" not in flags:
    try:
      with open("/proc/cpuinfo") as f:
        if " avx512f" in f.read():
          extra.append("--xla_cpu_prefer_vector_width=512")
    except OSError:
      pass
  if "xla_cpu_experimental_ynn_fusion_type" not in flags and _jaxlib_at_least((0, 10)):
    extra.append("--xla_cpu_experimental_ynn_fusion_type=-reduce")
  if extra:
    _os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def _jaxlib_at_least(version: tuple) -> bool:
  """Without importing jaxlib; older ones abort on flags they do not know."""
  from importlib import metadata
  try:
    found = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return False
  return found >= version


_xla_cpu_defaults()
