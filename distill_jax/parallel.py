"""Data parallelism for the outer step: one mesh axis, "data", over all devices.

The K θ0 samples of an outer step are independent unrolls, so sharding them
over devices is the cheap, communication-light win: each device trains K/n
inits on the (replicated) synthetic set and only the meta-gradient is summed
across devices. The real minibatch is sharded over the same axis. Everything
else (synthetic set, step sizes, optimizer state, the real training set) is
replicated, so checkpoints and metrics look exactly as on one device.

Multi-host: after `jax.distributed.initialize()` `jax.devices()` lists every
device of every process, so the same mesh spans hosts; each process runs the
same program on the same (replicated) inputs.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill_jax.errors import UserError

AXIS = "data"


def _setting(cfg: Any, key: str, default: Any) -> Any:
  """`cfg.parallel.<key>`, or `default` for configs that predate the section."""
  section = cfg.get("parallel", None) if cfg is not None else None
  return default if section is None else section.get(key, default)


def maybe_initialize_distributed(cfg: Any = None, *, enabled: Optional[bool] = None,
                                 **kwargs: Any) -> bool:
  """Joins a multi-process run when `enabled` (else `cfg.parallel.distributed`) is true.

  Must run before anything touches a device. On SLURM, Cloud TPU, Open MPI and
  Kubernetes `jax.distributed.initialize()` finds the coordinator, process
  count and id itself; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of
  process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, or pass them as `kwargs`.
  Returns whether this process is part of a distributed run.
  """
  if enabled is None:
    enabled = bool(_setting(cfg, "distributed", False))
  if not enabled:
    return False
  if jax.distributed.is_initialized():
    return True
  for name, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    if kwargs.get(name) is None and os.environ.get(env):
      kwargs[name] = int(os.environ[env])
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:  # no cluster detected and nothing set by hand
    raise UserError(f"parallel.distributed=True but the cluster could not be set up ({e}); launch under "
                    "SLURM/Cloud TPU/mpirun, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                    "JAX_PROCESS_ID") from None
  return True


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A 1-D mesh with axis "data" over the first `num_devices` devices (None or 0 = all, every host)."""
  devices = jax.devices()
  if num_devices:
    if num_devices < 0 or num_devices > len(devices):
      raise UserError(f"parallel.num_devices={num_devices} but {len(devices)} devices are visible; "
                      f"use --config.parallel.num_devices=0 (all) or a number up to {len(devices)}")
    if num_devices < len(devices) and jax.process_count() > 1:
      raise UserError(f"parallel.num_devices={num_devices} leaves out devices of a {jax.process_count()}-process "
                      "run; use --config.parallel.num_devices=0 (all devices) with parallel.distributed=True")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (AXIS,))


def mesh_from_config(cfg: Any) -> Optional[Mesh]:
  """The mesh `cfg.parallel.num_devices` asks for: 1 (default) = None (one device, no sharding)."""
  num = int(_setting(cfg, "num_devices", 1))
  if num == 1 and jax.process_count() == 1:
    return None
  return make_mesh(num)


def check_divisible(mesh: Mesh, sizes: Mapping[str, int]) -> None:
  """Each named size (a config key) must split evenly over the mesh; otherwise say what to set."""
  n = mesh.devices.size
  for key, size in sizes.items():
    if size % n:
      fix = -(-size // n) * n
      raise UserError(f"{key}={size} must be a multiple of the {n} devices in the mesh; use "
                      f"--config.{key}={fix} or --config.parallel.num_devices=1")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A full copy of `tree` on every mesh device: the outer state, static arrays, real data.

  Every process must pass the same values. Multi-process, each host builds the
  global array from its local copy, since `device_put` cannot address other hosts.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree_util.tree_map(put, tree)


def shard_leading(tree: Any, mesh: Mesh, key: str) -> Any:
  """Constrains every leaf's leading axis (K inits, real-batch rows) to be split over "data".

  For use inside `jit`. `key` names the config value that fixes that axis, for the error message.
  """
  leading = {x.shape[0] for x in jax.tree_util.tree_leaves(tree)}
  for size in leading:
    check_divisible(mesh, {key: size})
  return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P(AXIS)))
