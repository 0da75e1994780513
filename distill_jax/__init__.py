"""distill_jax: dataset distillation for text classification in JAX/Flax."""

import os as _os

__version__ = "0.1.0"


def _prefer_512_bit_vectors() -> None:
  """XLA:CPU vectorises for 256-bit registers by default; on AVX-512 CPUs 512-bit code
  speeds up the outer step's elementwise fusions (benchmarks/results/outer.md is measured
  with it). Takes effect only if JAX's CPU backend is not initialised yet; an explicit
  `xla_cpu_prefer_vector_width` in XLA_FLAGS wins."""
  flags = _os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_prefer_vector_width" in flags:
    return
  try:
    with open("/proc/cpuinfo") as f:
      avx512 = " avx512f" in f.read()
  except OSError:
    return
  if avx512:
    _os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_prefer_vector_width=512".strip()


_prefer_512_bit_vectors()
