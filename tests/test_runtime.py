"""runtime.configure(): the XLA:CPU flag defaults and their opt-outs, the CPU threefry lowering; a bare import changes nothing."""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags_after(code: str, xla_flags: str, **env_vars: str) -> str:
  env = dict(os.environ, XLA_FLAGS=xla_flags, **env_vars)
  out = subprocess.run([sys.executable, "-c", f"import os; {code}; print(os.environ['XLA_FLAGS'])"],
                       cwd=REPO, env=env, capture_output=True, text=True, check=True)
  return out.stdout.strip()


def _flags_after_import(xla_flags: str, **env_vars: str) -> str:
  return _flags_after("from distill_jax import runtime; runtime.configure()", xla_flags, **env_vars)


def test_import_has_no_side_effects():
  code = "import distill_jax, distill_jax.main, distill_jax.distill, distill_jax.evaluate"
  assert _flags_after(code, "--xla_force_host_platform_device_count=2") == "--xla_force_host_platform_device_count=2"
  rolled = ("import jax; k = jax.random.PRNGKey(0); "
            "print('while' in jax.jit(lambda k: jax.random.bits(k, (8,))).lower(k).as_text())")
  out = subprocess.run([sys.executable, "-c", f"{code}; {rolled}"], cwd=REPO, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "True"  # JAX's own (rolled) CPU rule is still in force


def test_512_bit_vectors_on_avx512_cpus_unless_set_explicitly():
  avx512 = " avx512f" in open("/proc/cpuinfo").read()
  flags = _flags_after_import("--xla_force_host_platform_device_count=2")
  assert flags.startswith("--xla_force_host_platform_device_count=2")
  assert ("--xla_cpu_prefer_vector_width=512" in flags) is avx512
  mine = _flags_after_import("--xla_cpu_prefer_vector_width=256")
  assert mine.startswith("--xla_cpu_prefer_vector_width=256") and "width=512" not in mine


def test_reductions_kept_out_of_ynnpack_unless_set_explicitly():
  flags = _flags_after_import("")
  assert flags.count("--xla_cpu_experimental_ynn_fusion_type=-reduce") == 1
  mine = "--xla_cpu_experimental_ynn_fusion_type=-dot"
  assert "ynn_fusion_type=-reduce" not in _flags_after_import(mine)
  assert _flags_after_import(mine).startswith(mine)


def test_no_cpu_flags_when_jax_platforms_leaves_the_cpu_out():
  assert _flags_after_import("", JAX_PLATFORMS="cuda") == ""
  assert "ynn_fusion_type=-reduce" in _flags_after_import("", JAX_PLATFORMS="cuda,cpu")


def test_threefry_unrolled_on_cpu_with_the_same_bits():
  import jax
  import numpy as np
  from jax._src.interpreters import mlir
  from jax._src.random import threefry2x32 as threefry
  from distill_jax import runtime
  runtime.configure()  # registers the unrolled rule

  key = jax.random.PRNGKey(7)
  sample = lambda: np.asarray(jax.jit(lambda k: jax.random.normal(k, (301, 37)))(key))  # fresh jit: lowered anew
  has_loop = lambda: "while" in jax.jit(lambda k: jax.random.bits(k, (8,))).lower(key).as_text()
  assert not has_loop()
  unrolled = sample()
  mlir.register_lowering(threefry.threefry2x32_p, threefry._threefry2x32_cpu_lowering_rule, platform="cpu")
  try:
    assert has_loop()  # JAX's own CPU rule: what the test compares against
    rolled = sample()
  finally:
    mlir.register_lowering(threefry.threefry2x32_p, threefry._threefry2x32_lowering_rule, platform="cpu",
                           inline=False)
  np.testing.assert_array_equal(unrolled.view(np.uint32), rolled.view(np.uint32))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed here")
def test_a_run_does_not_load_torch_where_it_is_installed(tmp_path):
  # tensorboardX would import it (2 s, ~200 MB) only to type-check tensors a run never passes.
  code = ("import sys; from distill_jax import main, metrics; w = metrics.Writer(sys.argv[1]); "
          "w.write(1, loss=0.5); print('torch' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "False"
  assert os.listdir(tmp_path / "tensorboard") and (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
