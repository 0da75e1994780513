"""A distillation killed with SIGKILL mid-run resumes to the same result as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from test_main import TINY, cli
from conftest import REPO
from fault_cases import FAULTS

ARGS = ["--config.outer.steps=8", "--config.outer.checkpoint_every=1", "--config.synthetic.n_per_class=2",
        "--config.inner.steps=2", "--config.outer.log_every=1", *TINY]


def _final_set(workdir):
  from distill_jax import checkpoint
  import orbax.checkpoint as ocp
  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"), create=False)
  step = mngr.latest_step()
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored.state


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
  r = cli(tmp_path, f"--workdir={tmp_path}/full", *ARGS)
  assert r.returncode == 0, r.stderr[-2000:]

  env = dict(os.environ, DISTILL_JAX_CACHE=str(tmp_path / "cache"))
  cmd = [sys.executable, "-m", "distill_jax.main", "--config=configs/paper.py:rotten_tomatoes",
         f"--workdir={tmp_path}/killed", *ARGS]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline:  # kill once a few checkpoints exist, mid-run
    done = [p for p in (ckpts.iterdir() if ckpts.exists() else []) if p.name.isdigit()]
    if len(done) >= 3 or proc.poll() is not None:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at, _ = _final_set(str(tmp_path / "killed"))
  assert killed_at < 8, "the run finished before it could be killed; the test proves nothing"

  r = cli(tmp_path, f"--workdir={tmp_path}/killed", *ARGS)
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"resumed from step {killed_at}" in r.stderr, FAULTS["killed"]["sees"]
  (sa, a), (sb, b) = _final_set(str(tmp_path / "full")), _final_set(str(tmp_path / "killed"))
  assert sa == sb == 8
  import jax
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  steps = [json.loads(l)["step"] for l in open(tmp_path / "killed" / "metrics.jsonl")]
  assert steps == list(range(1, 9))  # records past the restored checkpoint were replaced, not duplicated
