"""distill_jax: dataset distillation for text classification in JAX/Flax.

Importing the package has no side effects; `distill_jax.runtime.configure()`
applies the XLA settings the command line uses.
"""

__version__ = "0.2.0"


def load_distilled(path: str) -> dict:
  """An exported distilled set as numpy arrays (see `distill_jax.export`)."""
  from distill_jax import export
  return export.load_distilled(path)
