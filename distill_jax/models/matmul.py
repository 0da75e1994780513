"""Dense-layer matmuls with low-precision (bfloat16) operands and float32 results, in every derivative order.

Why: bf16 matmuls run 3-5× faster than float32 where the hardware has them (AMX
on recent x86 CPUs, tensor cores, TPUs), but JAX's transpose of a mixed-precision
dot casts the bf16 operands back to float32, so the backward pass, and the
meta-gradient's backward-of-backward through the inner loop, would still run in
float32. Here the VJP of a low-precision matmul is itself made of low-precision
matmuls, so every derivative order stays on the fast path, while activations,
LayerNorm, softmax, parameters and optimizer state keep the model's dtype.

Only the dense layers (≈90% of BERT's matmul FLOPs at L ≤ 128) take this path:
XLA:CPU runs bf16 × bf16 → f32 only in its fused (YNNPACK) matmuls, and the
batched attention contractions, differentiated twice, reach its generic dot
kernel, which rejects that type combination.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _matmul(spec: str, dtype: Any, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.promote_types(a.dtype, b.dtype))


def _fwd(spec, dtype, a, b):
  # Residuals in the low dtype (half the memory); zero-size tags keep the operands' own dtypes.
  return _matmul(spec, dtype, a, b), (a.astype(dtype), b.astype(dtype), jnp.zeros((0,), a.dtype),
                                      jnp.zeros((0,), b.dtype))


def _bwd(spec, dtype, res, g):
  a, b, a_tag, b_tag = res
  (sa, sb), out = spec.split("->")[0].split(","), spec.split("->")[1]
  # The transposes are 2-D matmuls of the same kind, so their own derivatives are low precision too.
  da = _matmul(f"{out},{sb}->{sa}", dtype, g, b).astype(a_tag.dtype)
  db = _matmul(f"{sa},{out}->{sb}", dtype, a, g).astype(b_tag.dtype)
  return da, db


_matmul.defvjp(_fwd, _bwd)


def matmul(a: jax.Array, b: jax.Array, dtype: Optional[Any] = None) -> jax.Array:
  """`a @ b` for 2-D operands, with `dtype` operands (and `a`'s dtype result) when given."""
  if a.ndim != 2 or b.ndim != 2:
    raise ValueError(f"matmul takes 2-D operands, got {a.shape} @ {b.shape}")
  return a @ b if dtype is None else _matmul("ik,kj->ij", jnp.dtype(dtype), a, b)


def dot_general(dtype: Optional[Any]) -> Optional[Callable]:
  """A `dot_general` for flax `Dense`/`DenseGeneral` with `dtype` operands; None = flax's own.

  Dense layers contract the input's trailing dims with the kernel's leading dims,
  so both flatten to one 2-D matmul.
  """
  if dtype is None:
    return None

  def dg(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    n = len(lc)
    if lb or rb or tuple(lc) != tuple(range(lhs.ndim - n, lhs.ndim)) or tuple(rc) != tuple(range(n)):
      raise ValueError(f"low-precision dot_general: only dense-layer contractions, got {dimension_numbers}")
    k = math.prod(rhs.shape[:n])
    out = matmul(lhs.reshape(-1, k), rhs.reshape(k, -1), dtype)
    return out.reshape(lhs.shape[:lhs.ndim - n] + rhs.shape[n:])

  return dg
