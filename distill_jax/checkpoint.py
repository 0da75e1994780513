"""Orbax checkpoints of a run: the state pytree plus the config as JSON.

The config travels inside every checkpoint so `evaluate` can rebuild the model
and the synthetic-set template from the checkpoint alone, and so a checkpoint
can be refused when it does not match the current config.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import threading
import time
from typing import Any, Callable, Iterator, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

from distill_jax import config as config_lib, signals
from distill_jax.errors import UserError

# Config keys that fix the shapes of a checkpoint: resuming or evaluating with
# other values cannot work, so they are checked before restoring.
SHAPE_KEYS = ("data.dataset", "data.max_len", "synthetic.n_per_class", "inner.steps", "model.size",
              "model.pretrained", "synthetic.kind", "synthetic.num_bases", "synthetic.label_mode",
              "inner.lr_groups", "synthetic.vocab_size", "synthetic.attention_labels")
# Shape keys added after checkpoints existed: a checkpoint without one was written with this value.
_SHAPE_KEY_DEFAULTS = {"inner.lr_groups": "global", "synthetic.vocab_size": 2048, "synthetic.attention_labels": False}


# Besides each loop's step cadence, a run saves once this much wall-clock has passed since its last save:
# a kill no handler sees (SIGKILL, the OOM killer, a lost machine) then costs at most this much work even
# where steps are slow (a 20/class MiniLM outer step takes ~45 s on 2 CPU cores, so 50 steps ~40 min).
MAX_UNSAVED_SECONDS = 600.0


class LastSave:
  """The step and wall-clock of a loop's last save (or of its start), which decide when the next is due."""

  def __init__(self, step: int) -> None:
    self.mark(step)

  def mark(self, step: int) -> None:
    self.step, self._time = step, time.monotonic()

  def overdue(self) -> bool:
    return time.monotonic() - self._time >= MAX_UNSAVED_SECONDS


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
    raise UserError(f"no checkpoint directory at {directory}; pass --config.evaluate.checkpoint=WORKDIR "
                    "of a distillation run (or its distilled/ export)")
  opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
  return _rescanning(lambda: ocp.CheckpointManager(directory, options=opts))


# A reader of a live run's checkpoints (an evaluation during a distillation) can list a step that the run
# deletes, keeping its newest `max_to_keep`, before the reader opens it. Orbax then fails while scanning;
# scanning again sees the current steps.
_RESCANS = 5


def _rescanning(scan: Callable[[], Any]) -> Any:
  for _ in range(_RESCANS - 1):
    try:
      return scan()
    except (FileNotFoundError, NotADirectoryError):
      pass
  return scan()


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config: dict) -> None:
  """Writes step `step`; a full disk ends in one line and leaves the earlier steps as they were."""
  try:
    with signals.deferred(hard=True), _stderr_held() as held:  # Ctrl-C waits: a checkpoint is whole or absent
      mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                              config=ocp.args.JsonSave(config)), force=True)
      mngr.wait_until_finished()
      held.release()
  except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore wrap OSError their own ways)
    if not is_disk_full(e):
      raise
    _remove_partial(mngr, step)
    kept = [s for s in mngr.all_steps() if s != step]
    raise UserError(f"no space left on device writing checkpoint step {step} in {mngr.directory}; "
                    f"the last checkpoint (step {max(kept) if kept else 'none'}) is intact; free space and "
                    "rerun the same command to resume") from None


class _Held:
  def __init__(self):
    self.chunks, self.keep = [], False

  def release(self) -> None:
    self.keep = True


@contextlib.contextmanager
def _stderr_held() -> Iterator[_Held]:
  """What the save prints to file descriptor 2, shown only if it succeeds: when a write fails, TensorStore's
  other in-flight writes each print a traceback from their threads, and one line says it all."""
  held = _Held()
  try:
    read, write = os.pipe()
    saved = os.dup(2)
  except OSError:
    yield held
    return
  os.dup2(write, 2)
  os.close(write)
  reader = threading.Thread(target=lambda: held.chunks.extend(iter(lambda: os.read(read, 1 << 16), b"")),
                            daemon=True)
  reader.start()
  try:
    yield held
  finally:
    if not held.keep:  # a failed save: its other writes keep failing (and printing) for a moment
      _until_quiet(held.chunks)
    os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees its end
    os.close(saved)
    reader.join(timeout=5)
    os.close(read)
    if held.keep and held.chunks:
      os.write(2, b"".join(held.chunks))


def _until_quiet(chunks: list, quiet: float = 1.0, limit: float = 10.0) -> None:
  """Waits until nothing new has been printed for `quiet` seconds (at most `limit`)."""
  start = last = time.monotonic()
  seen = len(chunks)
  while time.monotonic() - start < limit and time.monotonic() - last < quiet:
    time.sleep(0.1)
    if len(chunks) != seen:
      seen, last = len(chunks), time.monotonic()


def is_disk_full(e: BaseException) -> bool:
  text = str(e)
  return ((isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in text
          or "RESOURCE_EXHAUSTED" in text)


def _remove_partial(mngr: ocp.CheckpointManager, step: int) -> None:
  """Orbax's temporary folders of an unfinished save, and the step's folder if it never committed."""
  root = str(mngr.directory)
  for path in glob.glob(os.path.join(root, f"{step}.orbax-checkpoint-tmp*")):
    shutil.rmtree(path, ignore_errors=True)
  folder = os.path.join(root, str(step))
  if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, "commit_success.txt")):
    shutil.rmtree(folder, ignore_errors=True)
  mngr.reload()


def latest_step(mngr: ocp.CheckpointManager) -> Optional[int]:
  return mngr.latest_step()


def restore_config(mngr: ocp.CheckpointManager, step: Optional[int] = None) -> dict:
  """The config saved with `step` (default: the newest intact step), old key names upgraded."""
  if step is None:
    return restore_newest(mngr)[1]
  saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
  if not isinstance(saved, dict):
    raise ValueError(f"config is a JSON {type(saved).__name__}")
  return config_lib.upgrade(saved)


def check_compatible(saved: dict, current: dict, where: str, keys: tuple[str, ...] = SHAPE_KEYS) -> None:
  """Refuses a checkpoint whose `keys` (by default the shape keys) differ from the config's, naming the key to pass."""
  for key in keys:
    was = config_lib.get(saved, key)
    was = _SHAPE_KEY_DEFAULTS.get(key) if was is None else was
    now = config_lib.get(current, key)
    if was != now:
      raise UserError(f"checkpoint in {where} was written with {key}={was!r} but the config "
                      f"has {now!r}; use --config.{key}={was!r} or a new --workdir")


def check_resumable(folder: str, current: dict, keys: tuple[str, ...] = SHAPE_KEYS) -> None:
  """Refuses, before anything is written, to resume the checkpoints in `folder` under other values of `keys`."""
  if os.path.isdir(folder):
    mngr = manager(folder, create=False)
    if mngr.all_steps():
      restore_newest(mngr, check=lambda saved: check_compatible(saved, current, folder, keys))


def restore_step(mngr: ocp.CheckpointManager, step: int, template: Any = None) -> Any:
  """The state saved at `step`, as saved or in `template`'s structure (no fallback: see `restore_newest`)."""
  abstract = None if template is None else jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
  return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state


def restore_newest(mngr: ocp.CheckpointManager, template: Any = None, *, check: Optional[Callable] = None,
                   set_aside: bool = False, state: bool = False) -> tuple[int, dict, Any]:
  """(step, config, state or None) of the newest step that restores whole.

  A step whose files do not restore (truncated arrays, a garbled config, an
  empty folder) is skipped with a one-line warning; with `set_aside` (resuming,
  which will write those step numbers again) its folder is renamed
  `damaged-<step>`, kept for inspection. `check(config)` runs before the state
  is read, so a config that does not fit is refused, not taken for damage.
  `template` gives the state its structure; None restores it as saved.
  """
  for _ in range(_RESCANS):
    skipped, rotated = [], False
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        saved = restore_config(mngr, step)
        if check is not None:
          check(saved)
        if not state:
          return step, saved, None
        return step, saved, restore_step(mngr, step, template)
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any failure to read it is damage)
        if not os.path.isdir(os.path.join(str(mngr.directory), str(step))):
          rotated = True  # deleted by the live run that wrote it, since the listing: not damage
          continue
        skipped.append(_damaged(mngr, step, e, set_aside))
    if not rotated:
      break
    _rescanning(mngr.reload)
  if skipped:
    raise UserError(f"every checkpoint in {mngr.directory} is damaged (steps {', '.join(map(str, skipped))}); "
                    "move the folder away and start again, or pass a new --workdir")
  raise UserError(f"no checkpoint found in {mngr.directory}; run a distillation first")


def _damaged(mngr: ocp.CheckpointManager, step: int, error: Exception, set_aside: bool) -> int:
  reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
  folder = os.path.join(str(mngr.directory), str(step))
  if set_aside:
    moved = os.path.join(str(mngr.directory), f"damaged-{step}")
    n = 1
    while os.path.exists(moved):
      moved, n = os.path.join(str(mngr.directory), f"damaged-{step}-{n}"), n + 1
    os.rename(folder, moved)
    mngr.reload()
    logging.warning("checkpoint step %d is damaged (%s): moved to %s; falling back to an earlier step",
                    step, reason, moved)
  else:
    logging.warning("checkpoint step %d in %s is damaged (%s): skipped; using an earlier step",
                    step, mngr.directory, reason)
  return step


def restore_state(mngr: ocp.CheckpointManager, template: Any = None) -> Any:
  """The state of the newest intact step (`restore_newest`), as saved or in `template`'s structure."""
  return restore_newest(mngr, template, state=True)[2]
