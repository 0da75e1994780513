"""Package import: the XLA:CPU vector-width default and its opt-out."""

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
  assert _flags_after_import("--xla_cpu_prefer_vector_width=256") == "--xla_cpu_prefer_vector_width=256"
