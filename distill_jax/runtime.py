"""Process-wide JAX settings the engine is measured with, applied on request.

`import distill_jax` changes nothing; the command line, the scripts and the
benchmarks call `configure()` first thing. Library users who want the same
speed call it themselves before JAX touches a device:

    import distill_jax.runtime
    distill_jax.runtime.configure()
"""

from __future__ import annotations

import os
from importlib import metadata


def configure() -> None:
  """XLA:CPU flags, then the unrolled threefry lowering. Idempotent."""
  _xla_cpu_defaults()
  _unrolled_cpu_threefry()


def _xla_cpu_defaults() -> None:
  """XLA:CPU flags of the committed benchmark reports (benchmarks/results/outer.md).

  - 512-bit vectors on AVX-512 CPUs (XLA vectorises for 256-bit registers by
    default): faster elementwise fusions.
  - Reductions kept out of YNNPACK fusions (jaxlib >= 0.10): there, each
    LayerNorm/softmax row sum of the inner step took 0.1-0.7 ms, ~20% of the
    step; XLA's own reduction emitter is several times faster (the workaround
    of jax-ml/jax#37465).

  Take effect only if JAX's CPU backend is not initialised yet; a flag already
  in XLA_FLAGS wins. None when JAX_PLATFORMS leaves the CPU out (a GPU run):
  they would not matter, and a jaxlib newer than the one they were measured on
  aborts at start on a flag it no longer knows.
  """
  if not _cpu_in_use():
    return
  flags = os.environ.get("XLA_FLAGS", "")
  extra = []
  if "xla_cpu_prefer_vector_width" not in flags and _has_avx512():
    extra.append("--xla_cpu_prefer_vector_width=512")
  if "xla_cpu_experimental_ynn_fusion_type" not in flags and _jaxlib_at_least((0, 10)):
    extra.append("--xla_cpu_experimental_ynn_fusion_type=-reduce")
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def _cpu_in_use() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "")
  return not platforms or "cpu" in platforms.split(",")


def _has_avx512() -> bool:
  try:
    with open("/proc/cpuinfo") as f:
      return " avx512f" in f.read()
  except OSError:
    return False


def _jaxlib_at_least(version: tuple[int, ...]) -> bool:
  """Without importing jaxlib; older ones abort on flags they do not know."""
  try:
    found = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return False
  return found >= version


def _unrolled_cpu_threefry() -> None:
  """Threefry's 20 rounds as straight-line code on CPU too, as JAX lowers them on other platforms.

  On CPU, JAX rolls them into a 5-trip while loop (smaller HLO). XLA cannot fuse
  across the loop, so every trip writes the counter arrays to memory: sampling a
  BERT-Tiny θ0 (3.9M word-table entries) took 49 ms, a quarter of the smallest
  benchmark's outer step; unrolled, the rounds are one fusion: 10 ms. The bits are
  the same. A JAX whose internals moved keeps its own rule.
  """
  try:
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32 as threefry
    prim, rule = threefry.threefry2x32_p, threefry._threefry2x32_lowering_rule
  except (ImportError, AttributeError):
    return
  mlir.register_lowering(prim, rule, platform="cpu", inline=False)
