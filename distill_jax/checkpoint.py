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

from distill_jax import config as config_lib
from distill_jax.errors import UserError

# Config keys that fix the shapes of a checkpoint: resuming or evaluating with
# other values cannot work, so they are checked before restoring.
SHAPE_KEYS = ("data.dataset", "data.max_len", "synthetic.n_per_class", "inner.steps", "model.size",
              "model.pretrained", "synthetic.kind", "synthetic.num_bases", "synthetic.label_mode",
              "inner.lr_groups", "synthetic.vocab_size")
# Shape keys added after checkpoints existed: a checkpoint without one was written with this value.
_SHAPE_KEY_DEFAULTS = {"inner.lr_groups": "global", "synthetic.vocab_size": 2048}


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
  saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
  return config_lib.upgrade(saved)


def check_compatible(saved: dict, current: dict, where: str) -> None:
  """Refuses a checkpoint whose shape keys differ from the config's, naming the key to pass."""
  for key in SHAPE_KEYS:
    was = config_lib.get(saved, key)
    was = _SHAPE_KEY_DEFAULTS.get(key) if was is None else was
    now = config_lib.get(current, key)
    if was != now:
      raise UserError(f"checkpoint in {where} was written with {key}={was!r} but the config "
                      f"has {now!r}; use --config.{key}={was!r} or a new --workdir")


def restore_state(mngr: ocp.CheckpointManager, template: Any = None, step: Optional[int] = None) -> Any:
  """Restores into the structure of `template` (as saved without one); a shape mismatch is a user error."""
  step = mngr.latest_step() if step is None else step
  abstract = None if template is None else jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
  try:
    return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  except (ValueError, KeyError) as e:
    raise UserError(f"checkpoint {mngr.directory} step {step} does not fit this config "
                    f"({str(e).splitlines()[0][:200]}); use the config it was written with") from None
