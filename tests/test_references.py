"""scripts/references.py: the learning rate is chosen on held-out rows alone, finished runs are not rerun."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _finished(runs, lr, holdout, evaluation, name="tiny_trec"):
  path = runs / name / f"lr{lr:g}"
  path.mkdir(parents=True)
  (path / "host.txt").write_text("test host")
  (path / "result_train.json").write_text(json.dumps(dict(
      eval_accuracy=evaluation, best_holdout_accuracy=holdout, holdout_accuracy_per_epoch=[holdout], best_epoch=0,
      train_rows=90, holdout_rows=10, eval_rows=50, steps=3)))


def test_the_learning_rate_is_picked_on_held_out_rows_and_finished_runs_are_kept(tmp_path):
  runs, out = tmp_path / "runs", tmp_path / "out"
  # The held-out winner (1e-3) is not the eval winner (3e-3): only held-out accuracy may decide.
  for lr, holdout, evaluation in ((3e-4, 0.70, 0.60), (1e-3, 0.80, 0.65), (3e-3, 0.75, 0.90)):
    _finished(runs, lr, holdout, evaluation)
  r = subprocess.run([sys.executable, "scripts/references.py", "tiny", "trec", f"--runs={runs}", f"--out={out}"],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert "distill_jax.main" not in r.stdout  # every grid run had finished: nothing was started
  result = json.load(open(out / "tiny_trec.json"))
  assert result["learning_rate"] == 1e-3 and result["eval_accuracy"] == 0.65
  assert set(result["holdout_by_lr"]) == {"0.0003", "0.001", "0.003"} and result["hosts"] == ["test host"]
  assert "--config.train.learning_rate=0.001" in result["command"]


def test_a_reference_on_another_split_is_named_for_it_and_found_by_the_tables(tmp_path, monkeypatch):
  runs, out = tmp_path / "runs", tmp_path / "out"
  for lr, holdout, evaluation in ((3e-4, 0.70, 0.60), (1e-3, 0.80, 0.65), (3e-3, 0.75, 0.90)):
    _finished(runs, lr, holdout, evaluation, name="tiny_trec_train_100")
  r = subprocess.run([sys.executable, "scripts/references.py", "tiny", "trec", f"--runs={runs}", f"--out={out}",
                      "--eval-split=train[:100]"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  result = json.load(open(out / "tiny_trec_train_100.json"))
  assert result["eval_split"] == "train[:100]" and "--eval-split=train[:100]" in result["grid_command"]
  assert "--config.data.eval_split=train[:100]" in result["command"]
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  import make_tables
  monkeypatch.setattr(make_tables, "ROOT", str(tmp_path))
  (tmp_path / "results").mkdir()
  os.rename(out, tmp_path / "results" / "references")
  assert make_tables.reference("tiny", "trec", "train[:100]") == (0.65, "")
  assert make_tables.reference("tiny", "trec", "test") == (None, "")  # no reference on the default split here
