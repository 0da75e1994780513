"""distill_jax: dataset distillation for text classification in JAX/Flax."""

__version__ = "0.1.0"
