"""Run records: JSON Lines metrics, a one-line progress status, and result files."""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from distill_jax.errors import UserError


def _summary_writer(logdir: str):
  """tensorboardX imports torch whenever it is installed, only to accept torch tensors we never pass: 2 s
  and hundreds of MB per run where the tests' torch is present. Imported here with torch hidden, and
  only by a run that writes records (a rejected config exits before)."""
  hidden = "torch" not in sys.modules
  if hidden:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
  try:
    import tensorboardX
  finally:
    if hidden:
      del sys.modules["torch"]
  return tensorboardX.SummaryWriter(logdir)


def _plain(v: Any) -> Any:
  if isinstance(v, (jax.Array, np.ndarray, np.generic)):
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v.tolist()
  return v


class Writer:
  """Appends `{"step": ..., **metrics}` lines to `<workdir>/metrics.jsonl` and
  the same scalars to TensorBoard event files in `<workdir>/tensorboard`."""

  def __init__(self, workdir: str, name: str = "metrics.jsonl"):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, name)
    # Multi-host: one process writes records, or every host would append the same lines.
    self.active = jax.process_index() == 0
    self.tb = _summary_writer(os.path.join(workdir, "tensorboard")) if self.active else None

  def truncate_after(self, step: int) -> None:
    """On resume, drops records past the restored checkpoint (they are recomputed)."""
    if not self.active:
      return
    kept = [r for r in read(os.path.dirname(self.path), os.path.basename(self.path)) if r["step"] <= step]
    _atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))

  def write(self, step: int, **metrics: Any) -> None:
    if not self.active:
      return
    plain = {k: _plain(v) for k, v in metrics.items()}
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), **plain}) + "\n")
    except OSError as e:
      if e.errno == errno.ENOSPC:
        raise UserError(f"no space left on device writing {self.path}; the checkpoints are intact; free space "
                        "and rerun the same command to resume") from None
      raise
    for k, v in plain.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(k, v, int(step))
    self.tb.flush()


def last(workdir: str, key: str) -> Any:
  """The newest logged value of `key`, or None."""
  values = [r[key] for r in read(workdir) if key in r]
  return values[-1] if values else None


def read(workdir: str, name: str = "metrics.jsonl") -> list[dict]:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Periodic status line: steps/s, ETA and the given metrics."""

  def __init__(self, total: int, start: int = 0, label: str = "step"):
    self.total, self.start, self.label = total, start, label
    self.t0 = time.perf_counter()

  def line(self, step: int, **metrics: Any) -> str:
    done = step - self.start
    rate = done / max(time.perf_counter() - self.t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    parts = " ".join(f"{k}={_plain(v):.4g}" if isinstance(_plain(v), float) else f"{k}={_plain(v)}"
                     for k, v in metrics.items())
    return f"{self.label} {step}/{self.total} {rate:.2f} {self.label}s/s ETA {eta:.0f}s {parts}"

  def log(self, step: int, **metrics: Any) -> None:
    logging.info("%s", self.line(step, **metrics))


def write_json(path: str, obj: Any) -> None:
  """Atomic write, so an interrupted run never leaves half a result file (process 0 only)."""
  if jax.process_index() != 0:
    return
  _atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n")


def _atomic_write(path: str, text: str) -> None:
  """tmp + rename; a full disk ends in one line and leaves the old file and no tmp behind."""
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if e.errno == errno.ENOSPC:
      raise UserError(f"no space left on device writing {path}; the checkpoints are intact; free space and "
                      "rerun the same command") from None
    raise
