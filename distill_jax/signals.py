"""Ctrl-C and SIGTERM that never cut a checkpoint in half.

Outside a `deferred()` block a signal stops the run at once (`Interrupted`).
Inside one it is held until the block ends, so the outer loop can finish its
step, save, and exit with one line; a second Ctrl-C abandons the step, except
while a checkpoint is being written (`deferred(hard=True)`), which always
completes. `main` turns `Interrupted` into that line and exit status 128+signal.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(BaseException):
  """A signal ended the run; `message` says what was kept."""

  def __init__(self, signum: int, message: str = ""):
    super().__init__(message)
    self.signum, self.message = signum, message or f"interrupted ({_NAMES.get(signum, signum)})"

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


_depth, _hard, _pending = 0, 0, None


def _handle(signum: int, frame) -> None:  # pylint: disable=unused-argument
  global _pending
  if _depth and (_pending is None or _hard):
    if _pending is None:
      print(f"{_NAMES.get(signum, signum)}: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to abandon the step)", file=sys.stderr, flush=True)
    _pending = signum
    return
  raise Interrupted(signum)


def install() -> None:
  """SIGINT and SIGTERM go through `_handle` (main thread only, as Python requires)."""
  if threading.current_thread() is threading.main_thread():
    for s in _NAMES:
      signal.signal(s, _handle)


def pending() -> Optional[int]:
  return _pending


def take() -> Optional[int]:
  """The held signal, cleared."""
  global _pending
  signum, _pending = _pending, None
  return signum


@contextlib.contextmanager
def deferred(hard: bool = False) -> Iterator[None]:
  """Holds SIGINT/SIGTERM until the block ends; then a held one raises `Interrupted` (outermost block only)."""
  global _depth, _hard
  _depth += 1
  _hard += int(hard)
  try:
    yield
  finally:
    _depth -= 1
    _hard -= int(hard)
  if not _depth and _pending is not None:
    raise Interrupted(take())
