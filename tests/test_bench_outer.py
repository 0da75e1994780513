"""The benchmark's meta-gradient agreement job compares what it says it compares; its rounds pool and warm up honestly."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks import bench_outer


def test_agreement_separates_conditioning_from_bf16_rounding():
  bc = bench_outer.BenchConfig(M=2, L=8, T=3, real_batch=4, real_len=8)
  r = bench_outer.run_jax_agreement(bc, remat=True, remat_policy="nothing_saveable", seed=0)
  assert r["norm_x"] > 0
  # A 1-ulp change of S in a 3-step unroll barely moves dS; bf16 operands move it more, but not its direction.
  assert r["cos_x_ulp"] > 0.99999 and 0 < r["rel_err_x_ulp"] < 1e-4
  assert r["cos_x"] > 0.99 and r["rel_err_x_ulp"] < r["rel_err_x"] < 0.1
  assert r["cos_lr"] > 0.99 and r["cos_lr_ulp"] > 0.99999


def test_rounds_pool_every_timed_step_and_keep_the_largest_peak():
  a = dict(times=[3.0, 1.0], median_s=2.0, first_s=9.0, first_loss=0.7, last_loss=0.6, peak_rss_mib=100.0,
           faults_per_step=10.0)
  b = dict(times=[5.0, 4.0, 6.0], median_s=5.0, first_s=8.0, first_loss=0.5, last_loss=0.4, peak_rss_mib=90.0,
           faults_per_step=20.0)
  r = bench_outer.pool(a, b)
  assert r["times"] == [3.0, 1.0, 5.0, 4.0, 6.0] and r["median_s"] == 4.0  # the median of all five, not of the medians
  assert r["faults_per_step"] == 16.0  # per timed step: (2·10 + 3·20) / 5
  assert r["first_s"] == 9.0 and r["first_loss"] == 0.7 and r["last_loss"] == 0.4 and r["peak_rss_mib"] == 100.0


def test_rounds_must_be_positive():
  with pytest.raises(SystemExit):
    bench_outer.parse_args(["--rounds", "0"])


def test_jax_bf16_runs_reverse_over_reverse_where_forward_over_reverse_is_asked():
  assert bench_outer.jax_remat_policy("forward_over_reverse", "bfloat16") == "nothing_saveable"
  assert bench_outer.jax_remat_policy("forward_over_reverse", "model") == "forward_over_reverse"
  assert bench_outer.jax_remat_policy("dots_saveable", "bfloat16") == "dots_saveable"


def test_warm_up_fills_its_duration_before_the_timed_steps():
  calls = []

  def step() -> float:
    calls.append(time.perf_counter())
    time.sleep(0.01)
    return float(len(calls))

  r = bench_outer.time_steps(step, repeats=3, warmup_s=0.0)
  assert r["warmup_steps"] == 1 and len(r["times"]) == 3 and len(calls) == 4 and r["first_loss"] == 1.0
  calls.clear()
  r = bench_outer.time_steps(step, repeats=2, warmup_s=0.1)
  assert r["warmup_steps"] >= 5 and len(calls) == r["warmup_steps"] + 2
  assert calls[r["warmup_steps"]] - calls[0] >= 0.1  # the first timed step starts after the warm-up time
  with pytest.raises(SystemExit):
    bench_outer.parse_args(["--warmup-s", "-1"])


def test_sweep_segments_reach_the_engine_config():
  assert bench_outer.sweep_segment("sqrt", 300) == 17 and bench_outer.sweep_segment("sqrt", 30) == 5
  assert bench_outer.sweep_segment("8", 300) == 8 and bench_outer.sweep_segment("0", 300) == 0
  bc = bench_outer.BenchConfig(M=2, L=8, T=30, real_batch=4, real_len=8, segment=5)
  assert bench_outer.experiment_config(bc, remat=True, remat_policy="forward_over_reverse").inner.remat_segment == 5
  assert bench_outer.parse_args(["--sweep-T", "--remat-segment", "sqrt"]).remat_segment == "sqrt"
  for bad in (["--remat-segment", "4"], ["--sweep-T", "--remat-segment", "-2"], ["--sweep-T", "--remat-segment", "x"]):
    with pytest.raises(SystemExit):
      bench_outer.parse_args(bad)


def test_report_names_the_jax_device_and_the_flags_in_force(monkeypatch):
  import datetime
  import jax
  r = bench_outer.worker(dict(kind="devices-jax"))
  assert r["devices"] == f"cpu (cpu) × {jax.device_count()}" and r["xla_flags"] == os.environ.get("XLA_FLAGS", "")
  monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # an ISA cap (emulating an AVX2 host) is named in the report
  lines = bench_outer.header(bench_outer.parse_args([]), {}, datetime.datetime.now(), (0.0, 0.0, 0.0), r["devices"],
                             "--xla_cpu_max_isa=AVX2")
  flags = next(l for l in lines if l.startswith("Flags in force"))
  assert "XLA_FLAGS=--xla_cpu_max_isa=AVX2" in flags and "ATEN_CPU_CAPABILITY=avx2" in flags
  assert "MKL_ENABLE_INSTRUCTIONS=" in flags


def test_smoke_config_runs_only_when_asked():
  assert bench_outer.parse_args([]).configs == ["M4-L32-T10", "M20-L64-T30", "M40-L64-T100"]
  assert bench_outer.parse_args(["--configs", bench_outer.SMOKE.name]).configs == ["M2-L8-T2"]
