"""Promises about the repository itself."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO


def test_ci_runs_exactly_the_readme_install_and_test_commands():
  readme = open(os.path.join(REPO, "README.md")).read()
  blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, re.S))
  readme_cmds = {re.sub(r"\s+#.*", "", l).strip() for l in blocks.splitlines()}
  ci = [l.strip() for l in open(os.path.join(REPO, ".ci", "run"))
        if l.strip() and not l.startswith(("#", "set ", "cd "))]
  assert len(ci) == 3
  assert set(ci) <= readme_cmds, set(ci) - readme_cmds


def test_readme_stays_short():
  lines = open(os.path.join(REPO, "README.md")).read().splitlines()
  assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


def test_result_tables_in_the_docs_are_generated_from_the_result_files():
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_tables.py"), "--check"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_diagnosis_figures_are_drawn_from_the_result_files(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_plots.py"), "--out", str(tmp_path)],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  drawn = sorted(os.path.basename(l) for l in proc.stdout.split())
  # Every figure docs/diagnosis.md shows is redrawn, and each is a real PNG.
  shown = sorted(set(re.findall(r"figures/(\w+\.png)", open(os.path.join(REPO, "docs", "diagnosis.md")).read())))
  assert shown and set(shown) <= set(drawn), (shown, drawn)
  for name in drawn:
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_distill_eval_sums_the_attempts_of_a_resumed_command(tmp_path):
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  import distill_eval
  path = str(tmp_path / "eval" / "attempts.json")  # its folder is made by the first record
  distill_eval.record_attempt(path, 60.0, None)
  attempts = distill_eval.record_attempt(path, 30.0, 900.0)
  assert distill_eval.total(attempts) == 90.0 and json.load(open(path)) == attempts
  assert "peak_rss_mib" not in attempts[0] and attempts[1]["peak_rss_mib"] == 900.0


def test_distill_eval_keeps_the_logged_curves(tmp_path):
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  import distill_eval
  log = tmp_path / "metrics.jsonl"
  log.write_text('{"step": 10, "meta_loss": 0.6, "grad_norm": 1.0, "seconds": 5.0, "lr_vector": [1, 2]}\n'
                 '{"step": 25, "holdout_accuracy": 0.7}\n{"step": 20, "meta_loss": 0.5, "seconds": 9.0}\n')
  assert distill_eval.history(str(log)) == [{"step": 10, "meta_loss": 0.6, "grad_norm": 1.0},
                                            {"step": 25, "holdout_accuracy": 0.7},
                                            {"step": 20, "meta_loss": 0.5}]
  assert distill_eval.seconds_per_step(str(log)) is None  # the first interval holds the compile: none left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_distill_eval_lets_a_stopped_command_finish_its_safe_stop(tmp_path, signum):
  """A SIGTERM or Ctrl-C reaches the child once and the child is waited for, not killed, so its own line
  and checkpoint come out and the attempt's time is still recorded."""
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  import distill_eval
  ready, kept = tmp_path / "ready", tmp_path / "kept"
  child = ("import pathlib, signal, sys, time\n"
           "got = []\n"
           "def stop(signum, _):\n  got.append(signum)\n"
           "for s in (signal.SIGINT, signal.SIGTERM):\n  signal.signal(s, stop)\n"
           "pathlib.Path(sys.argv[1]).touch()\n"
           "while not got:\n  time.sleep(0.05)\n"
           "time.sleep(0.5)\npathlib.Path(sys.argv[2]).write_text(str(got))\nsys.exit(128 + got[0])\n")

  def stop_when_ready():
    while not ready.exists():
      time.sleep(0.05)
    os.kill(os.getpid(), signum)  # to this process only, as `kill PID` would (a terminal's Ctrl-C: its group)
  before = signal.getsignal(signum)
  threading.Thread(target=stop_when_ready, daemon=True).start()
  with pytest.raises(subprocess.CalledProcessError) as err:
    distill_eval.run_child([sys.executable, "-c", child, str(ready), str(kept)])
  assert err.value.returncode == 128 + signum and kept.read_text() == f"[{int(signum)}]"
  assert signal.getsignal(signum) is before
