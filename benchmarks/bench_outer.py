"""Seconds, memory and FLOPs of one outer distillation step, JAX vs PyTorch.

Why a harness: the outer step (T differentiable inner steps + meta-gradient + Adam)
is the whole cost of distillation, and its memory must not grow linearly in T
(remat). Every (framework, config) runs in a fresh subprocess so its peak RSS
(`ru_maxrss`) is its own; the parent only orchestrates and prints.

  python benchmarks/bench_outer.py                                # all configs, JAX and torch
  python benchmarks/bench_outer.py --rounds 3 --repeats 3         # the same, interleaved (results/outer.md)
  python benchmarks/bench_outer.py --configs M4-L32-T10 --repeats 2
  python benchmarks/bench_outer.py --sweep-T --out benchmarks/results/sweep.md

JAX runs the project's own jitted step (`distill.make_meta_loss` +
`distill.make_train_step`, fresh random θ0 per step as `init.kind='random'`);
torch runs `torch_reference` (HF BERT, autograd through the unroll, no remat)
with a fresh random θ0 per step and the same Adam + clipping update.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import ml_collections
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from configs import default  # noqa: E402  (ml_collections only: no jax in torch workers)

NUM_CLASSES = 2
REAL_ROWS = 2048  # device-resident real set the step samples its batch from
# BERT-Tiny as `bert.preset("tiny")`, spelled out so torch workers need not import jax (checked in JAX workers).
BERT_TINY = dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, initializer_range=0.02, num_labels=NUM_CLASSES)
# FLOPs: the step at T=FLOP_FIT_T compiled with scan_unroll k = 1, 2, 4 (XLA counts the loop body of k inner
# steps once, so count(k) = A + k·B); the k=4 count checks the fit. T=8 keeps every k a divisor (no remainder steps).
FLOP_FIT_T, FLOP_FIT_UNROLLS = 8, (1, 2, 4)
RESULT_TAG = "BENCH_RESULT "
FLOPS_METHOD = ("JAX FLOPs: XLA's cost analysis counts a loop body once whatever its trip count, so the same step "
                f"(T={FLOP_FIT_T}) is compiled with scan_unroll k = {', '.join(map(str, FLOP_FIT_UNROLLS))}, whose "
                "counts are A + k·B (B = one inner step, forward scan and its transpose; A = everything else, "
                "independent of T); B = count(2) − count(1), A = count(1) − B, flops(T) = A + T·B, and "
                "count(4) − count(2) = 2B is checked (\"fit err\"). Fully unrolling small T instead is ~1% off "
                "and not linear in T (XLA simplifies the first step, v = 0, and the stacked residuals add a T² "
                "term). The counts are all HLO FLOPs of the program that runs: remat recomputation, elementwise "
                "ops and θ0 sampling included. "
                "Torch FLOPs: torch.utils.flop_counter over one step (matmul/attention FLOPs only, no remat). "
                "Achieved FLOP/s and % of peak use each framework's own count.")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Synthetic set M×L, inner steps T, real batch `real_batch` × `real_len`; JAX remat segments of `segment`
  steps (`inner.remat_segment`, 0 = per-step checkpoints only)."""

  M: int
  L: int
  T: int
  real_batch: int
  real_len: int
  segment: int = 0

  @property
  def name(self) -> str:
    return f"M{self.M}-L{self.L}-T{self.T}"

  @property
  def shape(self) -> str:
    seg = f" segments of {self.segment}" if self.segment else ""
    return f"M={self.M} L={self.L} T={self.T} real {self.real_batch}×{self.real_len}{seg}"


DEFAULT_CONFIGS = (BenchConfig(4, 32, 10, 64, 64), BenchConfig(20, 64, 30, 128, 128),
                   BenchConfig(40, 64, 100, 128, 128))
# Not run by default: a step that compiles and runs in seconds, so CI can exercise the harness end to end
# (benchmarks/gpu_check.sh --dry-run); its numbers measure nothing.
SMOKE = BenchConfig(2, 8, 2, 4, 8)
CONFIGS = {c.name: c for c in (*DEFAULT_CONFIGS, SMOKE)}
SWEEP_BASE = BenchConfig(20, 64, 0, 128, 128)  # T filled in per sweep point


# ---- shared by both frameworks -----------------------------------------------

def experiment_config(bc: BenchConfig, remat: bool, remat_policy: str, scan_unroll: int = 1,
                      matmul_dtype: str = "model") -> ml_collections.ConfigDict:
  """configs/default.py with the benchmark's shapes: one source of hyper-parameters for both frameworks."""
  if bc.M % NUM_CLASSES:
    raise ValueError(f"M={bc.M} must be a multiple of {NUM_CLASSES} classes")
  cfg = default.get_config()
  cfg.data.max_len = max(bc.L, bc.real_len)
  cfg.synthetic.n_per_class = bc.M // NUM_CLASSES
  cfg.inner.steps = bc.T
  cfg.model.size = "tiny"
  cfg.model.dropout = 0.0
  cfg.model.matmul_dtype = matmul_dtype
  cfg.init.kind = "random"
  cfg.synthetic.kind = "direct"
  cfg.synthetic.init = "random"
  cfg.synthetic.label_mode = "hard"
  cfg.inner.optimizer = "sgd"
  cfg.inner.batch_size = 0
  cfg.inner.remat = remat
  cfg.inner.remat_policy = jax_remat_policy(remat_policy, matmul_dtype)
  cfg.inner.scan_unroll = scan_unroll
  cfg.inner.remat_segment = bc.segment
  cfg.outer.real_batch_size = bc.real_batch
  cfg.outer.inits_per_step = 1
  return cfg


def make_inputs(bc: BenchConfig, init_std: float, seed: int) -> dict[str, np.ndarray]:
  """Synthetic start (N(0, init_std) embeddings, balanced hard labels) and a random padded real set."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(bc.real_len // 2, bc.real_len + 1, size=REAL_ROWS)
  real_mask = (np.arange(bc.real_len)[None, :] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1, BERT_TINY["vocab_size"], size=(REAL_ROWS, bc.real_len)).astype(np.int32)
  return dict(x0=(init_std * rng.standard_normal((bc.M, bc.L, BERT_TINY["hidden_size"]))).astype(np.float32),
              labels=(np.arange(bc.M) % NUM_CLASSES).astype(np.int32),
              real_ids=ids * real_mask, real_mask=real_mask,
              real_labels=rng.integers(0, NUM_CLASSES, size=REAL_ROWS).astype(np.int32))


def inverse_softplus(y: float) -> float:
  return float(np.log(np.expm1(y)))


def max_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def time_steps(step: Callable[[], float], repeats: int, warmup_s: float = 0.0) -> dict[str, Any]:
  """Warm-up calls (at least one, and at least `warmup_s` seconds of them), then `repeats` timed calls;
  `step` must block until its work is done.

  Why by duration: a fresh process's first steps run slow for a while (M=4, where a step takes 0.2 s:
  0.72, 0.40, 0.33, 0.31, 0.26 s, then 0.20-0.24), so one warm-up step biased the cheap configs only.
  """
  t0 = time.perf_counter()
  first_loss = step()
  first = time.perf_counter() - t0
  warmup_steps = 1
  while time.perf_counter() - t0 < warmup_s:
    step()
    warmup_steps += 1
  times, loss = [], first_loss
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(repeats):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  return dict(first_s=first, warmup_steps=warmup_steps, times=times, median_s=statistics.median(times),
              first_loss=first_loss, last_loss=loss, faults_per_step=faults / repeats)


# ---- JAX worker ----------------------------------------------------------------

# JAX variants: matmul operand dtype (configs/default.py `model.matmul_dtype`).
JAX_VARIANTS = {"jax": "model", "jax-bf16": "bfloat16"}


def jax_remat_policy(asked: str, matmul_dtype: str) -> str:
  """The policy a JAX variant runs: bf16 matmuls have a custom VJP, which forward mode cannot
  differentiate (experiment.validate), so jax-bf16 falls back to reverse-over-reverse."""
  return "nothing_saveable" if matmul_dtype == "bfloat16" and asked == "forward_over_reverse" else asked


def jax_meta_loss(bc: BenchConfig, remat: bool, remat_policy: str, seed: int, scan_unroll: int = 1,
                  matmul_dtype: str = "model") -> tuple[Callable, Any, dict, dict, dict, tuple[int, str]]:
  """(meta_loss, outer optimizer, learned, static, real, (seed, lr_param)) from the project's own functions."""
  import jax.numpy as jnp
  from distill_jax import distill, fit, modeling, synthetic

  cfg = experiment_config(bc, remat, remat_policy, scan_unroll, matmul_dtype)
  model = modeling.build_model(cfg, NUM_CLASSES)
  mismatch = {k: (v, getattr(model.config, k)) for k, v in BERT_TINY.items() if getattr(model.config, k) != v}
  assert not mismatch, f"BERT_TINY disagrees with bert.preset('tiny'): {mismatch}"
  syn = synthetic.Direct(synthetic.SetShape(bc.M, bc.L, model.config.hidden_size, NUM_CLASSES, "hard"))
  inp = make_inputs(bc, cfg.synthetic.init_std, seed)
  data, static = syn.init(jnp.asarray(inp["x0"]), np.ones((bc.M, bc.L), np.int32), inp["labels"])
  learned = {"data": data, "lr": synthetic.init_step_sizes(cfg.inner.lr, bc.T, cfg.inner.lr_param)}
  spec = fit.InnerSpec.from_config(cfg)
  tx = distill.outer_tx(cfg)
  meta_loss = distill.make_meta_loss(model, syn, modeling.make_init_fn(model, cfg.init), spec,
                                     cfg.outer.real_batch_size, cfg.outer.inits_per_step)
  real = dict(input_ids=jnp.asarray(inp["real_ids"]), attention_mask=jnp.asarray(inp["real_mask"]),
              labels=jnp.asarray(inp["real_labels"]))
  return meta_loss, tx, learned, static, real, (cfg.seed, spec.lr_param)


def jax_step(bc: BenchConfig, remat: bool, remat_policy: str, seed: int, scan_unroll: int = 1,
             matmul_dtype: str = "model") -> tuple[Callable, dict, dict, dict]:
  """(jitted step, state, static, real) from the project's own functions, so the numbers are the engine's."""
  from distill_jax import distill
  meta_loss, tx, learned, static, real, (cfg_seed, lr_param) = jax_meta_loss(
      bc, remat, remat_policy, seed, scan_unroll, matmul_dtype)
  step = distill.make_train_step(meta_loss, tx, lr_param)
  return step, distill.init_state(learned, tx, cfg_seed), static, real


def run_jax_agreement(bc: BenchConfig, remat: bool, remat_policy: str, seed: int) -> dict:
  """How far the meta-gradient moves with bf16 matmul operands, and with a 1-ulp change of S in float32.

  Same θ0 key, real batch and set throughout. The second comparison is the problem's own conditioning: if
  rounding S alone turns dS around, no matmul precision can be trusted there and bf16 is not the culprit.
  """
  import jax
  import jax.numpy as jnp
  grads = {}
  for name, dtype, ulps in (("jax", "model", 0.0), ("jax-bf16", "bfloat16", 0.0), ("jax-ulp", "model", 1.0)):
    meta_loss, _, learned, static, real, _ = jax_meta_loss(bc, remat, remat_policy, seed, matmul_dtype=dtype)
    x = learned["data"]["x"]
    noise = jax.random.normal(jax.random.PRNGKey(seed + 1), x.shape, x.dtype)
    learned["data"]["x"] = x + ulps * jnp.finfo(x.dtype).eps * jnp.abs(x) * noise
    g = jax.jit(jax.grad(lambda l: meta_loss(l, static, jax.random.PRNGKey(seed), real)[0]))(learned)
    grads[name] = {k: np.ravel(np.asarray(v, np.float64)) for k, v in (("x", g["data"]["x"]), ("lr", g["lr"]))}
  out = {"norm_x": float(np.linalg.norm(grads["jax"]["x"]))}
  for name, tag in (("jax-bf16", ""), ("jax-ulp", "_ulp")):
    for k in ("x", "lr"):
      lo, hi = grads[name][k], grads["jax"][k]
      out[f"cos_{k}{tag}"] = float(lo @ hi / (np.linalg.norm(lo) * np.linalg.norm(hi)))
      out[f"rel_err_{k}{tag}"] = float(np.linalg.norm(lo - hi) / np.linalg.norm(hi))
  return out


def run_jax(bc: BenchConfig, repeats: int, remat: bool, remat_policy: str, seed: int,
            matmul_dtype: str = "model", warmup_s: float = 0.0) -> dict:
  """Compile time (lower + compile, timed apart from the steps), step times, RSS and XLA's buffer sizes."""
  import jax
  step, state, static, real = jax_step(bc, remat, remat_policy, seed, matmul_dtype=matmul_dtype)
  base = max_rss_mib()
  t0 = time.perf_counter()
  compiled = step.lower(state, static, real).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  box = [state]

  def one() -> float:
    box[0], m = compiled(box[0], static, real)
    jax.block_until_ready((box[0], m))
    assert bool(m["finite"]), "non-finite meta-loss or meta-gradient"
    return float(m["meta_loss"])

  out = time_steps(one, repeats, warmup_s)
  return dict(out, compile_s=compile_s, base_rss_mib=base, peak_rss_mib=max_rss_mib(),
              xla_temp_mib=mem.temp_size_in_bytes / 2**20 if mem else None)


def run_jax_flops(bc: BenchConfig, remat: bool, remat_policy: str, seed: int, matmul_dtype: str = "model") -> dict:
  """flops(T) = A + T·B from the step compiled with scan_unroll 1, 2, 4 (see FLOPS_METHOD)."""
  counts = {}
  for k in FLOP_FIT_UNROLLS:
    step, state, static, real = jax_step(dataclasses.replace(bc, T=FLOP_FIT_T), remat, remat_policy, seed,
                                         scan_unroll=k, matmul_dtype=matmul_dtype)
    ca = step.lower(state, static, real).compile().cost_analysis()
    counts[k] = float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])
  k1, k2, k3 = FLOP_FIT_UNROLLS
  b = (counts[k2] - counts[k1]) / (k2 - k1)
  a = counts[k1] - b * k1
  return dict(flops=a + b * bc.T, flops_a=a, flops_b=b, counts=counts,
              fit_rel_err=abs(a + b * k3 - counts[k3]) / counts[k3])


def jax_devices() -> str:
  """What the JAX workers run on: the report says so, so a GPU run of this harness names its device."""
  import jax
  devices = jax.devices()
  return f"{devices[0].platform} ({devices[0].device_kind}) × {len(devices)}"


def peak_jax(n: int, tries: int) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  return best_rate(lambda: dot(a, a).block_until_ready(), 2.0 * n**3, tries)


# ---- torch worker --------------------------------------------------------------

def run_torch(bc: BenchConfig, repeats: int, seed: int, count_flops: bool, warmup_s: float = 0.0) -> dict:
  """Same shapes and update as the JAX step: fresh θ0, sampled real batch, meta-gradient, clip, Adam."""
  import torch
  from torch.utils.flop_counter import FlopCounterMode
  from benchmarks import torch_reference as ref

  cfg = experiment_config(bc, remat=False, remat_policy="")
  if cfg.inner.optimizer != "sgd":
    raise ValueError("the torch reference implements the momentum-SGD inner loop only")
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  model = ref.build_model(BERT_TINY)
  inp = make_inputs(bc, cfg.synthetic.init_std, seed)
  x = torch.tensor(inp["x0"], requires_grad=True)
  r = torch.full((bc.T,), inverse_softplus(cfg.inner.lr), requires_grad=True)
  opt = torch.optim.Adam([{"params": [x], "lr": cfg.outer.lr}, {"params": [r], "lr": cfg.outer.lr_lr}])
  mask = torch.ones(bc.M, bc.L, dtype=torch.long)
  targets = torch.nn.functional.one_hot(torch.as_tensor(inp["labels"]).long(), NUM_CLASSES).float()
  real = {k: torch.as_tensor(inp[k]).long() for k in ("real_ids", "real_mask", "real_labels")}

  def one() -> float:
    theta0 = ref.fresh_params(model, gen, BERT_TINY["initializer_range"])
    idx = torch.randperm(REAL_ROWS, generator=gen)[:bc.real_batch]
    loss, dx, dr = ref.loss_and_grads(model, theta0, x, mask, targets, r, real["real_ids"][idx],
                                      real["real_mask"][idx], real["real_labels"][idx], cfg.inner.momentum)
    x.grad, r.grad = dx, dr
    if cfg.outer.clip:
      torch.nn.utils.clip_grad_norm_([x, r], cfg.outer.clip)
    opt.step()
    return float(loss)

  base = max_rss_mib()
  out = time_steps(one, repeats, warmup_s)
  out.update(base_rss_mib=base, peak_rss_mib=max_rss_mib(), threads=torch.get_num_threads())
  if count_flops:  # after timing and the RSS reading: the counter's bookkeeping is not part of either
    with FlopCounterMode(display=False) as counter:
      one()
    out["flops"] = float(counter.get_total_flops())
  return out


def peak_torch(n: int, tries: int) -> float:
  import torch
  a = torch.randn(n, n)
  torch.mm(a, a)
  return best_rate(lambda: torch.mm(a, a), 2.0 * n**3, tries)


def best_rate(fn: Callable[[], Any], flops: float, tries: int) -> float:
  best = float("inf")
  for _ in range(tries):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return flops / best


def worker(job: dict) -> dict:
  """Runs one measurement in this (fresh) process; `cpus` pins it before any framework starts its threads."""
  if job.get("cpus"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:job["cpus"]])
  kind = job["kind"]
  if "jax" in kind:
    from distill_jax import runtime
    runtime.configure()  # the XLA settings the command line runs with
  if kind == "peak-jax":
    return dict(flops_per_s=peak_jax(job["n"], job["tries"]))
  if kind == "devices-jax":  # after runtime.configure(): the flags every JAX worker runs with
    return dict(devices=jax_devices(), xla_flags=os.environ.get("XLA_FLAGS", ""))
  if kind == "peak-torch":
    return dict(flops_per_s=peak_torch(job["n"], job["tries"]))
  bc = BenchConfig(**job["config"])
  if kind in JAX_VARIANTS:
    return run_jax(bc, job["repeats"], job["remat"], job["remat_policy"], job["seed"], JAX_VARIANTS[kind],
                   job["warmup_s"])
  if kind == "jax-flops":
    return run_jax_flops(bc, job["remat"], job["remat_policy"], job["seed"], JAX_VARIANTS[job["variant"]])
  if kind == "jax-agreement":
    return run_jax_agreement(bc, job["remat"], job["remat_policy"], job["seed"])
  if kind == "torch":
    return run_torch(bc, job["repeats"], job["seed"], job["flops"], job["warmup_s"])
  raise ValueError(f"unknown job kind {kind!r}")


# ---- parent --------------------------------------------------------------------

def spawn(job: dict) -> dict:
  """Runs `job` in a fresh interpreter; its progress goes to our stderr, its result comes back as JSON."""
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"worker {job['kind']} failed (exit {proc.returncode}); stdout:\n{proc.stdout[-2000:]}")
  return json.loads(lines[-1][len(RESULT_TAG):])


# glibc mmaps every allocation above 32 MiB and unmaps it on free, so each step faults its large buffers in
# anew, 4 KiB at a time. With THP in "madvise" mode (Debian's and Ubuntu's default), this tunable (glibc ≥ 2.35;
# older ones ignore it) backs malloc's memory with 2 MiB pages instead.
MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
MALLOC_NOTE = ("Unless --no-malloc-thp or the caller's own GLIBC_TUNABLES, workers get "
               f"GLIBC_TUNABLES={MALLOC_TUNABLE}, so large buffers sit on transparent huge pages and a step no "
               "longer faults them in 4 KiB at a time (the page faults/step column: minor faults per timed step); "
               "it applies to both frameworks' allocations.")


def thp_mode() -> str:
  """The kernel's transparent-huge-page mode (the bracketed word), which decides whether the tunable matters."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      text = f.read()
  except OSError:
    return "unknown"
  return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def omp_wait_policy() -> str:
  """As the workers inherit it. Unset (libgomp's default: spin, then sleep) is torch's fastest on a quiet
  machine: PASSIVE took torch's M=20 step from 3.37 s to 5.99 s there; on a loaded CPU, though, spinning
  threads wait on each other at every barrier (26 s vs 0.6 s per step at load 8 on 2 cores), so set
  OMP_WAIT_POLICY=PASSIVE only when the machine is shared, and say so beside the numbers."""
  return os.environ.get("OMP_WAIT_POLICY", "unset")


def cpuinfo(field: str) -> Optional[str]:
  """The first /proc/cpuinfo line named `field` (its value), or None off Linux."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((l.split(":", 1)[1].strip() for l in f if l.startswith(field)), None)
  except OSError:
    return None


def cpu_model() -> str:
  return cpuinfo("model name") or platform.processor() or "unknown"


def cpu_isa() -> str:
  """The vector/matrix extensions XLA and torch pick kernels by: hosts named just "AMD EPYC" here measured a JAX
  float32 matmul peak of 184 GFLOP/s on one day and 374 on another."""
  flags = cpuinfo("flags")
  if flags is None:
    return "flags unknown"
  known = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
  return "flags: " + (", ".join(k for k in known if k in flags.split()) or "none of " + ", ".join(known))


def git_commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 else "unknown"
  except OSError:
    return "unknown"


def fmt(v: Optional[float], spec: str = ".3g") -> str:
  return "—" if v is None else format(v, spec)


def table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def measure_peak(frameworks: list[str], n: int, cpus: int) -> dict[str, float]:
  peaks = {fw: spawn(dict(kind=f"peak-{fw}", n=n, tries=5, cpus=cpus))["flops_per_s"] for fw in frameworks}
  log("matmul peak: " + ", ".join(f"{fw} {p / 1e9:.1f} GFLOP/s" for fw, p in peaks.items()))
  return peaks


def pool(first: dict, later: dict) -> dict:
  """One framework's rounds as one measurement: all timed steps, the median over them, the largest peak RSS,
  the mean page faults per timed step."""
  times = first["times"] + later["times"]
  out = dict(first, times=times, median_s=statistics.median(times), last_loss=later["last_loss"],
             peak_rss_mib=max(first["peak_rss_mib"], later["peak_rss_mib"]))
  n, m = len(first["times"]), len(later["times"])
  out["faults_per_step"] = (n * first["faults_per_step"] + m * later["faults_per_step"]) / (n + m)
  return out


def bench_configs(args: argparse.Namespace, peak: float) -> list[str]:
  """The main table (one row per framework and config) and the JAX/torch ratio table."""
  common = dict(repeats=args.repeats, seed=args.seed, remat=not args.no_remat, remat_policy=args.remat_policy,
                cpus=args.cpus, warmup_s=args.warmup_s)
  rows, ratio_rows = [], []
  for name in args.configs:
    bc = CONFIGS[name]
    res = {}
    for rnd in range(args.rounds):  # frameworks interleaved, so a drifting machine slows each alike
      for fw in args.frameworks:
        log(f"[{name}] {fw} round {rnd + 1}/{args.rounds} ...")
        count = not args.no_flops and rnd == 0
        job = dict(kind=fw, config=dataclasses.asdict(bc), flops=count, **common)
        r = spawn(job)
        if fw in JAX_VARIANTS and count:
          r.update(spawn(dict(job, kind="jax-flops", variant=fw)))
        res[fw] = pool(res[fw], r) if fw in res else r
        log(f"[{name}] {fw}: {r['median_s']:.3f} s/step this round, peak RSS {r['peak_rss_mib']:.0f} MiB"
            + (f", flops fit rel. err {r['fit_rel_err']:.1e}" if "fit_rel_err" in r else ""))
    for fw, r in res.items():
      rate = r["flops"] / r["median_s"] if "flops" in r else None
      rows.append([bc.shape, fw, f"{r['median_s']:.3f}", f"{min(r['times']):.3f}–{max(r['times']):.3f}",
                   fmt(r.get("compile_s"), ".1f"), f"{r['first_s']:.2f} ({r['warmup_steps']})",
                   f"{r['peak_rss_mib']:.0f}", f"{r['faults_per_step']:.0f}",
                   f"{r['base_rss_mib']:.0f}", fmt(r.get("xla_temp_mib"), ".1f"), fmt(r.get("flops"), ".3e"),
                   fmt(r.get("fit_rel_err"), ".1e"), fmt(rate and rate / 1e9, ".2f"),
                   fmt(rate and 100 * rate / peak, ".1f"),
                   f"{r['first_loss']:.4f}→{r['last_loss']:.4f}"])
    if "jax-bf16" in res and "jax" in res:
      agreement = spawn(dict(common, kind="jax-agreement", config=dataclasses.asdict(bc)))
      res["jax"].update({k: v for k, v in agreement.items() if k.endswith("_ulp")})
      res["jax-bf16"].update({k: v for k, v in agreement.items() if not k.endswith("_ulp")})
    if "torch" in res:
      t = res["torch"]["median_s"]
      for fw in (f for f in JAX_VARIANTS if f in res):
        r = res[fw]
        tag = "" if fw == "jax-bf16" else "_ulp"
        agree = f"{r[f'cos_x{tag}']:.4f} / {r[f'rel_err_x{tag}']:.3f}" if f"cos_x{tag}" in r else "—"
        ratio_rows.append([bc.shape, fw, f"{r['median_s']:.3f}", f"{t:.3f}", f"{r['median_s'] / t:.2f}",
                           f"{t / r['median_s']:.2f}×", agree])
  out = [table(["config", "framework", "s/step (median)", "min–max", "compile s", "first step s (warm-up steps)",
                "peak RSS MiB", "page faults/step", "RSS before step MiB", "XLA temp MiB", "FLOPs/step", "fit err", "GFLOP/s", "% of peak",
                "meta-loss warm-up→last"], rows)]
  if ratio_rows:
    out.append(table(["config", "JAX variant", "JAX s/step", "torch s/step", "JAX / torch", "speed-up",
                      "dS vs float32 dS (jax-bf16: bf16 matmuls; jax: S moved 1 ulp): cosine / rel. error"],
                     ratio_rows))
  return out


def agreement(args: argparse.Namespace) -> list[str]:
  """Meta-gradient dS of bf16 matmuls and of a 1-ulp change of S against float32 dS, per config (JAX only)."""
  rows = []
  for name in args.configs:
    bc = CONFIGS[name]
    log(f"[{name}] agreement ...")
    r = spawn(dict(kind="jax-agreement", config=dataclasses.asdict(bc), seed=args.seed, remat=not args.no_remat,
                   remat_policy=args.remat_policy, cpus=args.cpus))
    rows.append([bc.shape, f"{r['norm_x']:.3g}", f"{r['cos_x']:.4f}", f"{r['rel_err_x']:.3g}",
                 f"{r['cos_x_ulp']:.4f}", f"{r['rel_err_x_ulp']:.3g}", f"{r['cos_lr']:.4f}", f"{r['cos_lr_ulp']:.4f}"])
  return [table(["config", "‖dS‖ float32", "bf16 vs f32: cosine", "rel. error", "1-ulp S vs f32: cosine",
                 "rel. error", "d(step sizes) bf16: cosine", "d(step sizes) 1-ulp: cosine"], rows)]


def sweep_segment(asked: str, steps: int) -> int:
  """`--remat-segment`: a fixed segment length, or "sqrt" for round(√T) at each T (the memory-optimal choice)."""
  return round(steps ** 0.5) if asked == "sqrt" else int(asked)


def sweep_T(args: argparse.Namespace) -> list[str]:
  """Peak memory vs T for M=20, L=64, real 128×128 (JAX): the target is peak(T=300) ≤ 3× peak(T=30)."""
  res = {}
  for t in args.sweep_ts:
    bc = dataclasses.replace(SWEEP_BASE, T=t, segment=sweep_segment(args.remat_segment, t))
    log(f"[sweep] T={t} ...")
    res[t] = spawn(dict(kind="jax", config=dataclasses.asdict(bc), repeats=args.repeats, seed=args.seed,
                        remat=not args.no_remat, remat_policy=args.remat_policy, cpus=args.cpus,
                        warmup_s=args.warmup_s))
  ref_t = 30 if 30 in res else min(res)
  ref = res[ref_t]
  rows = [[str(t), str(sweep_segment(args.remat_segment, t) or "—"), f"{r['median_s']:.3f}",
           f"{r['compile_s']:.1f}", f"{r['peak_rss_mib']:.0f}", f"{r['base_rss_mib']:.0f}", f"{r['xla_temp_mib']:.1f}",
           f"{r['peak_rss_mib'] / ref['peak_rss_mib']:.2f}",
           f"{r['xla_temp_mib'] / ref['xla_temp_mib']:.2f}" if ref["xla_temp_mib"] else "—"]
          for t, r in res.items()]
  out = [table(["T", "remat segment", "s/step (median)", "compile s", "peak RSS MiB", "RSS before step MiB",
                "XLA temp MiB", f"peak RSS / T={ref_t}", f"XLA temp / T={ref_t}"], rows)]
  if 30 in res and 300 in res:
    ratio = res[300]["peak_rss_mib"] / res[30]["peak_rss_mib"]
    temp = res[300]["xla_temp_mib"] / res[30]["xla_temp_mib"] if res[30]["xla_temp_mib"] else float("nan")
    out.append(f"Target peak RSS(T=300) ≤ 3 × peak RSS(T=30): ratio {ratio:.2f} → "
               f"{'met' if ratio <= 3 else 'NOT met'} (XLA temp ratio {temp:.2f}).")
  return out


# Environment variables that cap the instruction set a library dispatches to (unset: the CPU's own best).
# With XLA_FLAGS=--xla_cpu_max_isa=AVX2 they emulate an AVX2-only CPU on an AVX-512 one, except for the
# kernels that jaxlib's YNNPACK picks by CPUID, which no flag caps.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def header(args: argparse.Namespace, peaks: dict[str, float], started: datetime.datetime,
           load: tuple[float, ...], devices: str, xla_flags: str = "") -> list[str]:
  """Everything needed to reproduce or discount the numbers (the CPU is often shared)."""
  packages = ("jax", "jaxlib", "flax", "torch", "transformers")
  versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in packages)
  remat = "off" if args.no_remat else f"on, policy {args.remat_policy}"
  bf16 = jax_remat_policy(args.remat_policy, JAX_VARIANTS["jax-bf16"])
  bf16_policy = "" if args.no_remat or bf16 == args.remat_policy else \
      f" (jax-bf16: {bf16}, as its matmuls' custom VJP rules out forward mode)"
  lines = [
      f"Command: `{shlex.join([os.path.basename(sys.executable)] + sys.argv)}`",
      f"Date: {started.isoformat(timespec='seconds')}; code: git {git_commit()}",
      f"CPU: {cpu_model()} × {os.cpu_count()} logical cores ({cpu_isa()}); load average at start "
      f"{' '.join(f'{v:.2f}' for v in load)}",
      f"Versions: python {platform.python_version()}, {versions}",
      f"Devices: JAX on {devices}; torch on the CPU (benchmarks/torch_reference.py never leaves it)",
      f"Flags in force: JAX workers XLA_FLAGS={xla_flags or 'unset'} (after distill_jax.runtime.configure()); "
      + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in ISA_CAPS),
      f"Threads: workers pinned to {args.cpus or len(os.sched_getaffinity(0))} CPU(s) (the frameworks' default thread "
      f"counts follow); OMP_WAIT_POLICY={omp_wait_policy()}",
      f"Allocator: workers run with GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', 'unset')}; "
      f"transparent huge pages: {thp_mode()}. {MALLOC_NOTE}",
      f"Model: BERT-Tiny shape ({BERT_TINY['num_hidden_layers']} layers, hidden {BERT_TINY['hidden_size']}, "
      f"{BERT_TINY['num_attention_heads']} heads, intermediate {BERT_TINY['intermediate_size']}, vocab "
      f"{BERT_TINY['vocab_size']}), {NUM_CLASSES} classes, float32 (jax-bf16: the dense layers' matmuls take bfloat16 operands and accumulate in float32, `--config.model.matmul_dtype=bfloat16`; everything else float32); inner: whole synthetic set per step, momentum SGD, "
      f"softplus step sizes; JAX remat {remat}{bf16_policy}; fresh random θ0 every outer step; real batch sampled from "
      f"{REAL_ROWS} random padded rows; outer update: clip + Adam on x and the raw step sizes.",
      f"Timing: median of {args.repeats * args.rounds} timed steps ({args.rounds} round(s) of {args.repeats}, "
      f"frameworks interleaved round by round, each after warm-up steps filling at least {args.warmup_s:g} s, "
      "at least one; first-step and compile columns: round 1); "
      "each (framework, config, round) in a fresh process, so peak RSS = that process's ru_maxrss (imports and, "
      "for JAX, compilation included); XLA temp = compiled memory_analysis() temp buffers."]
  if peaks:
    lines += [f"Float32 matmul peak (best of 5, {args.peak_n}² × {args.peak_n}²): "
              + ", ".join(f"{fw} {p / 1e9:.1f} GFLOP/s" for fw, p in peaks.items())
              + f"; % of peak is against {max(peaks.values()) / 1e9:.1f} GFLOP/s (also for jax-bf16, whose bf16 "
              "matmuls can exceed it).", FLOPS_METHOD]
  return lines


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  csv = lambda s: [x for x in s.split(",") if x]
  p.add_argument("--configs", type=csv, default=[c.name for c in DEFAULT_CONFIGS],
                 help=f"subset of {','.join(CONFIGS)} (default: all but the smoke test {SMOKE.name})")
  p.add_argument("--frameworks", type=csv, default=["jax", "jax-bf16", "torch"],
                 help="subset of jax,jax-bf16,torch (jax-bf16: model.matmul_dtype=bfloat16)")
  p.add_argument("--repeats", type=int, default=5, help="timed steps after the warm-up (median reported)")
  p.add_argument("--rounds", type=int, default=1,
                 help="run every framework this many times per config, interleaved; the median pools all timed steps")
  p.add_argument("--out", default="", help="also write the markdown report here (e.g. benchmarks/results/x.md)")
  p.add_argument("--sweep-T", action="store_true", help="JAX peak memory vs T for M=20, L=64, real 128×128")
  p.add_argument("--sweep-ts", type=lambda s: [int(x) for x in csv(s)], default=[10, 30, 100, 300],
                 help="the T values of --sweep-T (default 10,30,100,300)")
  p.add_argument("--agreement", action="store_true",
                 help="only the meta-gradient agreement table: bf16 matmuls and a 1-ulp change of S vs float32")
  p.add_argument("--remat-policy", default=default.get_config().inner.remat_policy,
                 help="JAX inner-step checkpoint policy (configs/default.py's by default)")
  p.add_argument("--remat-segment", default="0",
                 help="--sweep-T: JAX checkpoints segments of this many inner steps too "
                      "(inner.remat_segment; 'sqrt' = round(√T) per T; 0 = per-step checkpoints only)")
  p.add_argument("--no-remat", action="store_true", help="JAX: store every inner step's activations")
  p.add_argument("--no-flops", action="store_true", help="skip the FLOP counts (saves 3 JAX compiles per config)")
  p.add_argument("--peak-n", type=int, default=2048, help="matmul size for the float32 peak")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--cpus", type=int, default=0, help="pin each worker to this many CPUs (0 = all it may use)")
  p.add_argument("--warmup-s", type=float, default=5.0,
                 help="untimed steps before the timed ones fill at least this many seconds (at least one step)")
  p.add_argument("--no-malloc-thp", action="store_true",
                 help=f"do not give the workers GLIBC_TUNABLES={MALLOC_TUNABLE} (see the report header)")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  bad = [c for c in args.configs if c not in CONFIGS] + [f for f in args.frameworks if f not in (*JAX_VARIANTS, "torch")]
  if args.rounds < 1 or args.repeats < 1:
    p.error("--rounds and --repeats must be at least 1")
  if args.warmup_s < 0:
    p.error("--warmup-s must be ≥ 0")
  if not (args.remat_segment == "sqrt" or args.remat_segment.isdigit()) or \
      (args.remat_segment != "0" and not args.sweep_T):
    p.error("--remat-segment takes 'sqrt' or a count ≥ 0, with --sweep-T")
  if bad:
    p.error(f"unknown config/framework {bad}; configs: {list(CONFIGS)}, frameworks: jax, jax-bf16, torch")
  return args


def main(argv: Optional[list[str]] = None) -> None:
  args = parse_args(argv)
  if args.worker:
    print(RESULT_TAG + json.dumps(worker(json.loads(args.worker))), flush=True)
    return
  if not args.no_malloc_thp:
    os.environ.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLE)  # the workers inherit it; this process is past malloc's start
  started, load = datetime.datetime.now().astimezone(), os.getloadavg()
  kinds = sorted({"torch" if f == "torch" else "jax" for f in args.frameworks})
  only = args.sweep_T or args.agreement
  peaks = {} if only else measure_peak(kinds, args.peak_n, args.cpus)
  jax_env = spawn(dict(kind="devices-jax", cpus=args.cpus)) if only or "jax" in kinds else {}
  devices, xla_flags = jax_env.get("devices", "—"), jax_env.get("xla_flags", "")
  body = sweep_T(args) if args.sweep_T else agreement(args) if args.agreement else bench_configs(args, max(peaks.values()))
  title = " (T sweep)" if args.sweep_T else " (meta-gradient agreement)" if args.agreement else ""
  report = "\n\n".join(["# Outer-step benchmark" + title,
                        "\n".join(f"- {line}" for line in header(args, peaks, started, load, devices, xla_flags)), *body]) + "\n"
  print(report)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(report)
    log(f"wrote {args.out}")


if __name__ == "__main__":
  main()
