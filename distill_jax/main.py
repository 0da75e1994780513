"""Command line: `python -m distill_jax.main --config=configs/sst2.py --workdir=DIR`.

`--config.mode` selects train (full data), distill, or evaluate (a distilled
checkpoint, with baselines). Problems the user can fix end in one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging as pylogging
import os
import subprocess
import sys
import time
from typing import Callable, Iterator

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from distill_jax import (checkpoint, config as config_lib, distill, evaluate, experiment, metrics, parallel, runtime,
                         signals, train)
from distill_jax.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """--config (with its --config.KEY overrides) and --workdir.

  Not at import: ml_collections registers the overrides it finds in sys.argv
  when --config is defined, so old key names must be renamed before that.
  """
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/sst2.py.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results (default: runs/...).")


def _git_commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def prepare_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {workdir} ({e.strerror}); pass a writable --workdir") from None
  if not os.access(workdir, os.W_OK):
    raise UserError(f"workdir {workdir} is not writable; pass a writable --workdir")


@contextlib.contextmanager
def workdir_lock(workdir: str, check: Callable[[], None]) -> Iterator[None]:
  """One run per workdir: a second one is refused instead of interleaving checkpoints and metrics.

  `check` runs once the lock is held and before the lock file names this run: a refused resume leaves
  every file as it was, and never reads checkpoints that a live run is rotating away under it.
  Multi-host runs share the workdir: process 0, which writes it, holds the lock.
  """
  if jax.process_index() != 0:
    check()
    yield
    return
  path = os.path.join(workdir, ".lock")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
      raise UserError(f"workdir {workdir} is in use by another distill_jax run (PID {holder}); wait for it to "
                      "finish or pass another --workdir") from None
    check()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


# Where an evaluation keeps each finished part (evaluate.evaluate_checkpoint), so a rerun continues.
EVALUATE_PARTS = "evaluate_parts"


def _what_is_kept(mode: str, workdir: str) -> str:
  return {"distill": f"the checkpoints in {workdir}/checkpoints are intact; rerun the same command to resume",
          "train": f"the training state in {workdir}/train_state is intact; rerun the same command to resume",
          "evaluate": f"the finished parts of the evaluation are kept in {workdir}/{EVALUATE_PARTS}; rerun the "
                      "same command to continue from them"}[mode]


def run(cfg, workdir: str) -> dict:
  cfg = config_lib.upgrade_config(cfg)
  config_lib.validate(cfg)  # before any data is read or the workdir is touched
  if cfg.mode == "evaluate":
    evaluate.check_source(cfg.evaluate.checkpoint)
  parallel.maybe_initialize_distributed(cfg)  # before anything touches a device
  prepare_workdir(workdir)

  def check_resumable() -> None:  # a refused resume leaves the run's files as they were
    if cfg.mode in ("distill", "train"):
      (distill if cfg.mode == "distill" else train).check_resumable(cfg, workdir)

  with workdir_lock(workdir, check=check_resumable):
    metrics.write_json(os.path.join(workdir, f"config_{cfg.mode}.json"),
                       dict(config=cfg.to_dict(), git_commit=_git_commit(), argv=sys.argv))
    if cfg.mode == "evaluate":
      result = evaluate.evaluate_checkpoint(cfg, experiment.setup, os.path.join(workdir, EVALUATE_PARTS))
    else:
      logging.info("loading %s and building the model...", cfg.data.dataset)
      exp = experiment.setup(cfg)
      if cfg.mode == "train":
        result = train.train_and_evaluate(exp, workdir)
      else:
        result = distill.distill_and_save(exp, workdir)
      result = dict(result, dataset=exp.spec.name)
    result = dict(result, mode=cfg.mode, git_commit=_git_commit())
    metrics.write_json(os.path.join(workdir, f"result_{cfg.mode}.json"), result)
    if cfg.mode == "distill" and cfg.evaluate.after_distill:
      logging.info("evaluating the set against a random real subset and the real-data ceiling...")
      again = experiment.with_overrides(cfg, {"mode": "evaluate", "evaluate.checkpoint": workdir})
      evaluation = dict(evaluate.evaluate_checkpoint(again, experiment.setup, os.path.join(workdir, EVALUATE_PARTS)),
                        mode="evaluate", git_commit=result["git_commit"])
      metrics.write_json(os.path.join(workdir, "result_evaluate.json"), evaluation)
      result = dict(result, evaluation=evaluation)
  return result


def default_workdir(cfg) -> str:
  """runs/<dataset>-<mode>-<date>-<time>, so the quick start needs no --workdir."""
  name = os.path.basename(os.path.normpath(str(config_lib.get(cfg.to_dict(), "data.dataset", "run"))))
  return os.path.join("runs", f"{name}-{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}")


class _QuietLibraries(pylogging.Filter):
  """Orbax logs every file rename at INFO and JAX its search for a TPU; keep our progress lines readable."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if ("orbax" in record.pathname and record.exc_info) or _unretrieved_disk_full(record):
      return False  # a failed save's tracebacks from Orbax's threads: checkpoint.save reports it in one line
    noisy = "orbax" in record.pathname or record.pathname.endswith("xla_bridge.py")
    return record.levelno >= pylogging.WARNING or not noisy


def _unretrieved_disk_full(record: pylogging.LogRecord) -> bool:
  """asyncio's "Task (or _GatheringFuture) exception was never retrieved" for a write that failed on a full disk:
  the save's other in-flight writes, collected after checkpoint.save has reported the failure."""
  first = record.getMessage().split("\n", 1)[0]
  return first.endswith("exception was never retrieved") and (
      record.exc_info is None or record.exc_info[1] is None or checkpoint.is_disk_full(record.exc_info[1]))


def quiet_logging() -> None:
  """Time-stamped one-line messages without absl's thread and file prefix; library chatter off."""
  handler = logging.get_absl_handler()
  # Also on the loggers themselves: a failed save's tasks can be collected at exit, after absl's handler is
  # gone, when logging falls back to its last-resort handler, which no handler filter reaches.
  for target in (handler, pylogging.getLogger("asyncio"), pylogging.getLogger("absl")):
    if not any(isinstance(f, _QuietLibraries) for f in target.filters):  # once, however often main runs
      target.addFilter(_QuietLibraries())
  handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))


def main(argv) -> None:
  quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    cfg = FLAGS.config
    if cfg is not None:
      cfg.get("mode")  # the config file loads lazily: make a bad path fail here
  except OSError:
    _fail(f"cannot load config file {flags.FLAGS['config'].config_filename!r}; "
          "pass an existing one, e.g. --config=configs/sst2.py")
  if cfg is None:
    _fail("pass --config=configs/<dataset>.py (and optionally --workdir=DIR)")
  workdir = FLAGS.workdir or default_workdir(config_lib.upgrade_config(cfg))
  if not FLAGS.workdir:
    logging.info("workdir: %s", workdir)
  signals.install()
  try:
    result = run(cfg, workdir)
  except UserError as e:
    _fail(str(e))
  except signals.Interrupted as e:
    if not e.message.startswith("interrupted at step"):
      e.message += f"; {_what_is_kept(cfg.mode, workdir)}"
    print(e.message, file=sys.stderr)
    sys.exit(e.exit_code)
  for line in summary_lines(result, workdir, FLAGS["config"].config_filename):
    print(line, file=sys.stderr)


def summary_lines(result: dict, workdir: str, config_file: str) -> list[str]:
  """What a run achieved and where its files are, in three lines."""
  pct = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}%"
  if result["mode"] == "distill":
    acc = metrics.last(workdir, "holdout_accuracy")
    held = f"; held-out accuracy {100 * acc:.2f}% (outer.eval_seeds models)" if acc is not None else ""
    lines = [f"distilled {result['steps']} outer steps in {result['seconds'] / 60:.1f} min{held}",
             f"set: {result['exported']} (set.safetensors, set.jsonl); checkpoints: {workdir}/checkpoints"]
    if "evaluation" in result:
      return lines + summary_lines(result["evaluation"], workdir, config_file)[:1]
    return lines + [f"compare with real data: python -m distill_jax.main --config={config_file} "
                    f"--config.mode=evaluate --config.evaluate.checkpoint={workdir}"]
  if result["mode"] == "evaluate":
    parts = [f"distilled {pct(result['distilled'])}"]
    parts += [f"{name} {pct(result[key])}" for key, name in (("random_subset", "random real subset"),
                                                             ("kcenter_subset", "k-center"),
                                                             ("herding_subset", "herding"),
                                                             ("equal_storage_subset", "equal-storage real subset"),
                                                             ("real_ceiling", "real-data ceiling"),
                                                             ("initial_set", "before distillation"))
              if "mean" in result.get(key, {})]
    return [f"{result['dataset']}, {result['num_examples']} examples, {result['distilled']['n']} fresh models "
            f"each: " + " | ".join(parts), f"result: {workdir}/result_evaluate.json"]
  return [f"eval accuracy {100 * result['eval_accuracy']:.2f}% of the epoch-{result['best_epoch']} model, chosen "
          f"on {result['holdout_rows']} held-out training rows ({100 * result['best_holdout_accuracy']:.2f}%); "
          f"result: {workdir}/result_train.json"]


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with bad overrides reported in one line instead of a traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    _fail(f"{msg} (see --helpshort)")
  except (AttributeError, KeyError) as e:
    _fail(f"unknown config key {str(e).strip(chr(34))}; the keys are listed in configs/default.py")
  except (TypeError, ValueError) as e:
    _fail(f"bad config override: {e}")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def entry() -> None:
  runtime.configure()
  sys.argv = config_lib.rename_flags(sys.argv)
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  entry()
