"""The command line end to end, and its one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

TINY = ["--config.data.max_len=16", "--config.data.train_limit=64", "--config.data.eval_limit=32",
        "--config.data.holdout_rows=16"]


def cli(tmp_path, *args, config="configs/paper.py:rotten_tomatoes"):
  env = dict(os.environ, DISTILL_JAX_CACHE=str(tmp_path / "cache"))
  cmd = [sys.executable, "-m", "distill_jax.main", f"--config={config}", *args]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_train_mode_end_to_end(tmp_path):
  r = cli(tmp_path, f"--workdir={tmp_path}/w", "--config.mode=train", "--config.train.epochs=2",
          "--config.train.batch_size=16", *TINY)
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.load(open(tmp_path / "w" / "result_train.json"))
  assert len(result["holdout_accuracy_per_epoch"]) == 2
  assert result["best_holdout_accuracy"] == max(result["holdout_accuracy_per_epoch"])
  assert 0.0 <= result["eval_accuracy"] <= 1.0
  assert os.path.isdir(tmp_path / "w" / "train_checkpoints")
  saved = json.load(open(tmp_path / "w" / "config_train.json"))
  assert saved["config"]["train"]["epochs"] == 2 and saved["git_commit"]
  assert "eval accuracy" in r.stderr  # progress lines go to the absl log


def test_distill_then_evaluate_end_to_end(tmp_path):
  r = cli(tmp_path, f"--workdir={tmp_path}/d", "--config.outer.steps=3", "--config.synthetic.n_per_class=2",
          "--config.inner.steps=2", "--config.outer.log_every=1", "--config.outer.eval_every=3", *TINY)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "meta_loss=" in r.stderr and "ETA" in r.stderr
  # Progress is checked on held-out training rows, never on the eval split that the tables report.
  records = [json.loads(line) for line in open(tmp_path / "d" / "metrics.jsonl")]
  assert [r["step"] for r in records if "holdout_accuracy" in r] == [3]
  assert not any("eval_accuracy" in r for r in records) and "held-out accuracy" in r.stderr
  r = cli(tmp_path, f"--workdir={tmp_path}/e", "--config.mode=evaluate", f"--config.evaluate.checkpoint={tmp_path}/d",
          "--config.evaluate.seeds=2", "--config.evaluate.lr_grid=(0.01,)",
          "--config.evaluate.decode=False", f"--config.evaluate.ceiling_cache={tmp_path}/ceilings", *TINY)
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.load(open(tmp_path / "e" / "result_evaluate.json"))
  assert result["outer_steps"] == 3 and result["distilled"]["n"] == 2
  assert result["real_ceiling"]["n"] == 2 and "reused_from" not in result["real_ceiling"]
  # The Orbax checkpoint alone reproduces the reported accuracies in a fresh process, and the ceiling
  # (the same data, model, inner loop and grid) is read back instead of measured again.
  r = cli(tmp_path, f"--workdir={tmp_path}/again", "--config.mode=evaluate", f"--config.evaluate.checkpoint={tmp_path}/d",
          "--config.evaluate.seeds=2", "--config.evaluate.lr_grid=(0.01,)", "--config.evaluate.baselines=False",
          "--config.evaluate.decode=False", f"--config.evaluate.ceiling_cache={tmp_path}/ceilings", *TINY)
  assert r.returncode == 0, r.stderr[-2000:]
  again = json.load(open(tmp_path / "again" / "result_evaluate.json"))
  assert again["distilled"]["accs"] == result["distilled"]["accs"]
  assert again["real_ceiling"]["accs"] == result["real_ceiling"]["accs"]
  assert again["real_ceiling"]["reused_from"].startswith(str(tmp_path / "ceilings"))


@pytest.mark.parametrize("args,message", [
    (["--config.data.dataset=nosuch"], "unknown dataset 'nosuch'"),
    (["--config.nope=1"], "unknown config key 'nope'"),
    (["--config.data.max_len=abc"], "invalid literal"),
    (["--config.data.max_len=1000"], "exceeds the model's 512 position embeddings"),
    (["--config.inner.steps=0"], "inner.steps must be >= 1"),
    (["--config.inner_steps=0"], "inner.steps must be >= 1"),  # the old name, still an alias
    (["--config.outer.lr=inf"], "outer.lr must be a finite number > 0"),
    (["--config.train.learning_rate=nan"], "train.learning_rate must be a finite number > 0"),
    (["--config.outer.log_every=0"], "outer.log_every must be >= 1"),
    (["--config.data.holdout_rows=0"], "data.holdout_rows must be >= 1"),
    (["--config.synthetic.kind=addressable"], "needs --config.synthetic.num_bases >= 1"),
    (["--config.model.pooling=max"], "model.pooling must be 'cls' or 'mean'"),
    (["--config.inner.remat_policy=everything"], "inner.remat_policy must be one of"),
    (["--config.model.matmul_dtype=bfloat16"], "add --config.inner.remat_policy=nothing_saveable"),
    (["--config.inner.remat_segment=-1"], "inner.remat_segment must be >= 0"),
    (["--config.inner.remat_segment=4", "--config.inner.remat=False"], "add --config.inner.remat=True"),
    (["--config.synthetic.superpose=3"], "synthetic.superpose > 1 needs --config.synthetic.kind=tokens"),
    (["--config.synthetic.candidates_per_position=8"], "candidates_per_position > 0 needs --config.synthetic.kind=tokens"),
    (["--config.synthetic.candidates_per_position=-1"], "candidates_per_position must be in [0, synthetic.vocab_size]"),
    (["--config.synthetic.candidate_choice=distinctive"], "add --config.synthetic.candidates_per_position=K"),
    (["--config.data.data_dir=/nonexistent/data"], "DISTILL_JAX_DATA_DIR"),
    (["--config.data.train_split=nosplit"], "nosplit"),
    (["--config.synthetic.n_per_class=1000", *TINY], "n_per_class"),
    (["--config.init.kind=pretrained"], "needs --config.model.pretrained"),
    (["--config.mode=evaluate"], "needs --config.evaluate.checkpoint"),
    (["--config.mode=evaluate", "--config.evaluate.checkpoint=/nonexistent/run"], "no checkpoint directory or distilled set"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  r = cli(tmp_path, f"--workdir={tmp_path}/w", *args)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and message in lines[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_missing_config_file_and_unwritable_workdir(tmp_path):
  r = cli(tmp_path, f"--workdir={tmp_path}/w", config="configs/nosuch.py")
  assert r.returncode == 2 and "cannot load config file" in r.stderr and "Traceback" not in r.stderr
  (tmp_path / "file").write_text("x")
  r = cli(tmp_path, f"--workdir={tmp_path}/file/sub")
  assert r.returncode == 2 and "pass a writable --workdir" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("future", ["Task", "_GatheringFuture"])
def test_a_failed_saves_unretrieved_writes_are_kept_off_stderr(future):
  # asyncio logs each unretrieved write on further lines of one record; collected at exit it reaches the
  # last-resort handler, so the logger itself must drop it (tests/test_faults.py's real full disk). Any other
  # unretrieved exception is a bug of ours and stays visible.
  import logging
  from distill_jax import main

  def record(exc):
    return logging.LogRecord("asyncio", logging.ERROR, "/lib/asyncio/base_events.py", 1,
                             f"{future} exception was never retrieved\nfuture: <{future} finished ...>", None,
                             (type(exc), exc, None))
  full = record(ValueError("RESOURCE_EXHAUSTED: Error writing ...: No space left on device [os_error_code='28']"))
  assert not main._QuietLibraries().filter(full)
  main.quiet_logging()
  assert not logging.getLogger("asyncio").filter(full)
  assert logging.getLogger("asyncio").filter(record(KeyError("state")))
