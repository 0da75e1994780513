"""Command line: `python -m distill_jax.main --config=configs/sst2.py --workdir=DIR`.

`--config.mode` selects train (full data), distill, or evaluate (a distilled
checkpoint, with baselines). Problems the user can fix end in one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import subprocess
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from distill_jax import config as config_lib, evaluate, experiment, metrics, parallel, runtime
from distill_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/sst2.py.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def _git_commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def prepare_workdir(workdir: str, cfg) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {workdir} ({e.strerror}); pass a writable --workdir") from None
  if not os.access(workdir, os.W_OK):
    raise UserError(f"workdir {workdir} is not writable; pass a writable --workdir")
  metrics.write_json(os.path.join(workdir, f"config_{cfg.mode}.json"),
                     dict(config=cfg.to_dict(), git_commit=_git_commit(), argv=sys.argv))


def run(cfg, workdir: str) -> dict:
  cfg = config_lib.upgrade_config(cfg)
  config_lib.validate(cfg)  # before any data is read or the workdir is touched
  parallel.maybe_initialize_distributed(cfg)  # before anything touches a device
  prepare_workdir(workdir, cfg)
  if cfg.mode == "evaluate":
    result = evaluate.evaluate_checkpoint(cfg, experiment.setup)
  else:
    exp = experiment.setup(cfg)
    if cfg.mode == "train":
      from distill_jax import train
      result = train.train_and_evaluate(exp, workdir)
    else:
      from distill_jax import distill
      result = distill.distill_and_save(exp, workdir)
    result = dict(result, dataset=exp.spec.name)
  result = dict(result, mode=cfg.mode, git_commit=_git_commit())
  metrics.write_json(os.path.join(workdir, f"result_{cfg.mode}.json"), result)
  return result


class _QuietLibraries(pylogging.Filter):
  """Orbax logs every file rename at INFO; keep our progress lines readable."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def main(argv) -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    cfg = FLAGS.config
    if cfg is not None:
      cfg.get("mode")  # the config file loads lazily: make a bad path fail here
  except OSError:
    _fail(f"cannot load config file {flags.FLAGS['config'].config_filename!r}; "
          "pass an existing one, e.g. --config=configs/sst2.py")
  if cfg is None or FLAGS.workdir is None:
    _fail("pass --config=configs/<dataset>.py and --workdir=DIR")
  try:
    result = run(cfg, FLAGS.workdir)
  except UserError as e:
    _fail(str(e))
  summary = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
  logging.info("result: %s", json.dumps(summary))


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with bad overrides reported in one line instead of a traceback."""
  try:
    return FLAGS(config_lib.rename_flags(argv))
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
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  entry()
