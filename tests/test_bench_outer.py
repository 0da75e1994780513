"""The benchmark's meta-gradient agreement job compares what it says it compares."""

from __future__ import annotations

from benchmarks import bench_outer


def test_agreement_separates_conditioning_from_bf16_rounding():
  bc = bench_outer.BenchConfig(M=2, L=8, T=3, real_batch=4, real_len=8)
  r = bench_outer.run_jax_agreement(bc, remat=True, remat_policy="nothing_saveable", seed=0)
  assert r["norm_x"] > 0
  # A 1-ulp change of S in a 3-step unroll barely moves dS; bf16 operands move it more, but not its direction.
  assert r["cos_x_ulp"] > 0.99999 and 0 < r["rel_err_x_ulp"] < 1e-4
  assert r["cos_x"] > 0.99 and r["rel_err_x_ulp"] < r["rel_err_x"] < 0.1
  assert r["cos_lr"] > 0.99 and r["cos_lr_ulp"] > 0.99999
