"""Run records: JSON Lines metrics, a one-line progress status, and result files."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging


def _plain(v: Any) -> Any:
  if isinstance(v, (jax.Array, np.ndarray, np.generic)):
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v.tolist()
  return v


class Writer:
  """Appends `{"step": ..., **metrics}` lines to `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, name: str = "metrics.jsonl"):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, name)

  def write(self, step: int, **metrics: Any) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}) + "\n")


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
  """Atomic write, so an interrupted run never leaves half a result file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_plain)
    f.write("\n")
  os.replace(tmp, path)
