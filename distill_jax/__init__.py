"""distill_jax: dataset distillation for text classification in JAX/Flax."""

import os as _os

__version__ = "0.1.0"


def load_distilled(path: str) -> dict:
  """`export.load_distilled`, imported on first call so `import distill_jax` stays light for its users."""
  from distill_jax import export
  return export.load_distilled(path)


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


_xla_cpu_defaults()
_unrolled_cpu_threefry()
