"""The devices JAX runs on and the project's imports that are missing (benchmarks/gpu_check.sh, part b).

Why: a lent GPU machine runs its own image's Python packages, not this project's pins, and cannot download any;
one line per finding says at once whether the GPU came up and which wheels .whl/ must carry.

  python3 benchmarks/gpu_devices.py gpu   # exit 1 unless JAX's first device is a GPU and nothing is missing
"""

from __future__ import annotations

import importlib
import sys

# What the parity tests and bench_outer's JAX workers import, beyond jax itself.
MODULES = ("flax", "optax", "chex", "orbax.checkpoint", "ml_collections", "tensorboardX", "matplotlib",
           "transformers", "torch", "pytest")


def missing_modules() -> list[str]:
  missing = []
  for name in MODULES:
    try:
      importlib.import_module(name)
    except Exception as e:  # a broken install (ImportError, or an error inside the package) counts as missing
      missing.append(f"{name} ({type(e).__name__}: {e})")
  return missing


def main(expected_platform: str) -> int:
  missing = missing_modules()
  import jax
  devices = jax.devices()
  print(f"jax {jax.__version__} on {devices[0].platform} ({devices[0].device_kind}) × {len(devices)}")
  print("devices:", devices)
  print("missing imports:", "; ".join(missing) or "none")
  return 0 if devices[0].platform == expected_platform and not missing else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
