"""Orbax checkpoints of a run: the state pytree plus the config as JSON.

The config travels inside every checkpoint so `evaluate` can rebuild the model
and the synthetic-set template from the checkpoint alone, and so a checkpoint
can be refused when it does not match the current config.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from distill_jax.errors import UserError


def manager(directory: str, max_to_keep: Optional[int] = 3, create: bool = True) -> ocp.CheckpointManager:
  directory = os.path.abspath(directory)
  if create:
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create checkpoint directory {directory} ({e.strerror}); "
                      "pass a writable --workdir") from None
    if not os.access(directory, os.W_OK):
      raise UserError(f"checkpoint directory {directory} is not writable; pass a writable --workdir")
  elif not os.path.isdir(directory):
    raise UserError(f"no checkpoint directory at {directory}; pass --config.checkpoint=WORKDIR/checkpoints "
                    "of a finished run")
  opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
  return ocp.CheckpointManager(directory, options=opts)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          config=ocp.args.JsonSave(config)), force=True)
  mngr.wait_until_finished()


def latest_step(mngr: ocp.CheckpointManager) -> Optional[int]:
  return mngr.latest_step()


def restore_config(mngr: ocp.CheckpointManager, step: Optional[int] = None) -> dict:
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise UserError(f"no checkpoint found in {mngr.directory}; run a distillation first")
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config


def restore_state(mngr: ocp.CheckpointManager, template: Any, step: Optional[int] = None) -> Any:
  """Restores into the structure of `template`; a shape mismatch is a user error."""
  step = mngr.latest_step() if step is None else step
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
  try:
    return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  except (ValueError, KeyError) as e:
    raise UserError(f"checkpoint {mngr.directory} step {step} does not fit this config "
                    f"({str(e).splitlines()[0][:200]}); use the config it was written with") from None
