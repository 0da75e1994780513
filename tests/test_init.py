"""Package import: the XLA:CPU flag defaults and their opt-outs."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags_after_import(xla_flags: str) -> str:
  env = dict(os.environ, XLA_FLAGS=xla_flags)
  out = subprocess.run([sys.executable, "-c", "import os, distill_jax; print(os.environ['XLA_FLAGS'])"],
                       cwd=REPO, env=env, capture_output=True, text=True, check=True)
  return out.stdout.strip()


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
