"""Faults injected into real command-line runs on a few dozen Rotten Tomatoes rows: each ends in one
line that says what was kept, and loses nothing. The cases and their expected outcomes live in
fault_cases.py, which also renders the table in docs/troubleshooting.md."""

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from fault_cases import FAULTS
from test_main import TINY

ARGS = ["--config.synthetic.n_per_class=2", "--config.inner.steps=2", "--config.outer.steps=4",
        "--config.outer.checkpoint_every=1", "--config.outer.log_every=1", *TINY]


def cli(cache, *args, config="configs/paper.py:rotten_tomatoes", **popen):
  env = dict(os.environ, DISTILL_JAX_CACHE=str(cache))
  cmd = [sys.executable, "-m", "distill_jax.main", f"--config={config}", *args]
  if popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, text=True, **popen)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def error_line(r) -> str:
  lines = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """One small distillation (steps 2, 3, 4 kept) that every fault test copies and damages."""
  root = tmp_path_factory.mktemp("faults")
  r = cli(root / "cache", f"--workdir={root}/run", *ARGS)
  assert r.returncode == 0, r.stderr[-3000:]
  return root


def copy_run(shared, tmp_path):
  shutil.copytree(shared / "run", tmp_path / "run")
  return tmp_path / "run"


def steps(run) -> list[int]:
  return sorted(int(p) for p in os.listdir(run / "checkpoints") if p.isdigit())


def restore(run, step=None):
  from distill_jax import checkpoint
  mngr = checkpoint.manager(str(run / "checkpoints"), create=False)
  if step is None:
    return checkpoint.restore_newest(mngr, state=True)
  import orbax.checkpoint as ocp
  return step, None, mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state


def test_train_mode_keeps_the_distillation_checkpoints(shared, tmp_path):
  case = FAULTS["train_on_distill_workdir"]
  run = copy_run(shared, tmp_path)
  r = cli(shared / "cache", f"--workdir={run}", "--config.mode=train", "--config.train.epochs=1",
          "--config.train.batch_size=16", *TINY)
  assert r.returncode == 0, r.stderr[-3000:]
  assert os.path.isdir(run / "train_checkpoints"), case["sees"]
  assert steps(run) == [2, 3, 4] and restore(run)[0] == 4, case["kept"]


def test_an_overflowing_update_is_never_saved(shared, tmp_path):
  # 1e39 is a finite config value but inf in float32: loss and gradient stay finite, the update does not.
  case = FAULTS["update_overflows"]
  run = copy_run(shared, tmp_path)
  r = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.outer.steps=6", "--config.outer.lr=1e39")
  assert r.returncode == 2
  line = error_line(r)
  assert "non-finite meta-loss, meta-gradient or update at outer step 5" in line, case["sees"]
  assert "the last good checkpoint (step 4) is intact" in line
  for step in steps(run):
    state = restore(run, step)[2]
    import jax
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(state)
               if np.issubdtype(np.asarray(x).dtype, np.floating)), (step, case["kept"])


def test_evaluate_records_the_dataset_it_used(shared, tmp_path):
  case = FAULTS["evaluate_other_dataset"]
  r = cli(shared / "cache", f"--workdir={tmp_path}/eval", "--config.mode=evaluate",
          f"--config.evaluate.checkpoint={shared}/run", "--config.evaluate.seeds=1",
          "--config.evaluate.baselines=False", "--config.evaluate.decode=False",
          "--config.evaluate.ceiling_batch_size=0", *TINY, config="configs/paper.py:ag_news")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "evaluating on rotten_tomatoes" in r.stderr, case["sees"]
  assert json.load(open(tmp_path / "eval" / "result_evaluate.json"))["dataset"] == "rotten_tomatoes", case["kept"]


def test_a_truncated_newest_checkpoint_is_set_aside_and_the_run_resumes(shared, tmp_path):
  run = copy_run(shared, tmp_path)
  for folder, _, files in os.walk(run / "checkpoints" / "4" / "state"):
    for name in files:
      if os.path.basename(folder) == "d":
        with open(os.path.join(folder, name), "r+b") as f:
          f.truncate(8)
  r = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.outer.steps=5", "--config.inner.lr=0.02",
          "--config.outer.real_batch_size=1000")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "checkpoint step 4 is damaged" in r.stderr and "moved to" in r.stderr, FAULTS["truncated_newest_checkpoint"]
  assert "resumed from step 3" in r.stderr
  assert os.path.isdir(run / "checkpoints" / "damaged-4") and steps(run) == [3, 4, 5]
  assert "resuming keeps the step sizes learned so far" in r.stderr, FAULTS["resume_with_other_inner_lr"]
  assert "outer.real_batch_size=1000 exceeds the 48 training rows" in r.stderr, FAULTS["real_batch_above_rows"]


def test_garbled_or_empty_newest_checkpoints_fall_back_read_only(shared, tmp_path, caplog):
  from distill_jax import checkpoint
  run = copy_run(shared, tmp_path)
  with open(run / "checkpoints" / "4" / "config" / "metadata", "w") as f:
    f.write("garbage{")
  os.makedirs(run / "checkpoints" / "9")
  mngr = checkpoint.manager(str(run / "checkpoints"), create=False)
  step, saved, state = checkpoint.restore_newest(mngr, state=True)
  assert step == 3 and saved["synthetic"]["n_per_class"] == 2 and int(state["state"]["step"]) == 3
  assert os.path.isdir(run / "checkpoints" / "9") and os.path.isdir(run / "checkpoints" / "4")  # read-only
  assert "checkpoint step 9" in caplog.text and "checkpoint step 4" in caplog.text, \
      FAULTS["garbled_or_empty_checkpoint"]


def test_a_reader_of_a_live_run_skips_the_steps_it_rotates_away(shared, tmp_path, caplog):
  # An evaluation opened on a running distillation lists steps 2-4; the run then saves 5-7 and, keeping
  # its newest 3, deletes them. The reader rescans instead of calling the vanished steps damaged.
  from distill_jax import checkpoint
  run = copy_run(shared, tmp_path)
  reader = checkpoint.manager(str(run / "checkpoints"), create=False)
  step, saved, state = checkpoint.restore_newest(checkpoint.manager(str(run / "checkpoints"), create=False),
                                                 state=True)
  writer = checkpoint.manager(str(run / "checkpoints"))
  for new in (5, 6, 7):
    checkpoint.save(writer, new, state, saved)
  assert steps(run) == [5, 6, 7] and reader.all_steps() == [2, 3, 4]
  got, _, restored = checkpoint.restore_newest(reader, state=True)
  assert got == 7 and int(restored["state"]["step"]) == int(state["state"]["step"])
  assert "damaged" not in caplog.text


def test_all_checkpoints_damaged_is_one_line(shared, tmp_path):
  from distill_jax import checkpoint
  from distill_jax.errors import UserError
  run = copy_run(shared, tmp_path)
  for step in steps(run):
    with open(run / "checkpoints" / str(step) / "config" / "metadata", "w") as f:
      f.write("")
  with pytest.raises(UserError, match=r"every checkpoint in .* is damaged \(steps 4, 3, 2\)"):
    checkpoint.restore_newest(checkpoint.manager(str(run / "checkpoints"), create=False))
  assert steps(run) == [2, 3, 4], FAULTS["all_checkpoints_damaged"]["kept"]


def _snapshot(run) -> dict:
  return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_refused_resume_and_an_unknown_dataset_touch_nothing(shared, tmp_path):
  run = copy_run(shared, tmp_path)
  before = _snapshot(run)
  r = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.synthetic.n_per_class=3")
  assert r.returncode == 2
  assert "written with synthetic.n_per_class=2 but the config has 3" in error_line(r), FAULTS["refused_resume"]
  assert _snapshot(run) == before
  r = cli(shared / "cache", f"--workdir={tmp_path}/new", "--config.data.dataset=nosuch")
  assert r.returncode == 2 and "unknown dataset 'nosuch'" in error_line(r)
  assert not os.path.exists(tmp_path / "new"), FAULTS["unknown_dataset"]["kept"]


def test_a_held_workdir_is_refused_before_its_checkpoints_are_read(shared, tmp_path):
  # A live run deletes old steps as it saves new ones: a second run that read them first could crash on a
  # vanished step (seen in CI). Here reading them would refuse the config; the held lock must answer first.
  run = copy_run(shared, tmp_path)
  before = _snapshot(run)
  fd = os.open(run / ".lock", os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    r = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.synthetic.n_per_class=3")
  finally:
    os.close(fd)
  assert r.returncode == 2 and "is in use by another distill_jax run" in error_line(r), \
      FAULTS["second_run_same_workdir"]["kept"]
  assert _snapshot(run) == before


def _wait_for(path, text, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and text in open(path).read():
      return
    assert proc.poll() is None, open(path).read()[-3000:]
    time.sleep(0.2)
  raise AssertionError(f"{text!r} not seen in {timeout} s")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_a_checkpoint_and_a_second_run_is_refused(shared, tmp_path, signum, code):
  run = copy_run(shared, tmp_path)
  log = tmp_path / "stderr.txt"
  with open(log, "w") as err:
    proc = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.outer.steps=100000",
               stdout=subprocess.DEVNULL, stderr=err)
    try:
      _wait_for(log, "step 5/", proc)
      if signum == signal.SIGINT:  # the lock, while the first run holds it
        second = cli(shared / "cache", f"--workdir={run}", *ARGS)
        assert second.returncode == 2
        assert f"in use by another distill_jax run (PID {proc.pid})" in error_line(second), \
            FAULTS["second_run_same_workdir"]
      proc.send_signal(signum)
      assert proc.wait(timeout=300) == code
    finally:
      if proc.poll() is None:
        proc.kill()
  last = open(log).read().strip().splitlines()[-1]
  assert last.startswith("interrupted at step ") and "rerun the same command to resume" in last, \
      FAULTS["interrupt"]
  step = int(last.split()[3].rstrip(";"))
  assert step > 4 and steps(run)[-1] == step and restore(run)[0] == step
  assert "Traceback" not in open(log).read()


def test_disk_full_ends_in_one_line_and_keeps_the_last_checkpoint(monkeypatch, tmp_path):
  """In-process, with the failing write injected (tests/test_faults.py also fills a real tmpfs when it can)."""
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  from distill_jax import checkpoint, metrics
  from distill_jax.errors import UserError
  mngr = checkpoint.manager(str(tmp_path / "checkpoints"))
  state = {"x": jnp.ones((4, 4))}
  checkpoint.save(mngr, 1, state, {"a": 1})

  def full(*args, **kwargs):
    os.makedirs(tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1", exist_ok=True)
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with pytest.raises(UserError, match=r"no space left on device writing checkpoint step 2 .*the last checkpoint "
                                      r"\(step 1\) is intact"):
    checkpoint.save(mngr, 2, state, {"a": 1})
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"], FAULTS["disk_full_checkpoint"]["kept"]
  monkeypatch.undo()
  path = tmp_path / "result.json"
  metrics.write_json(str(path), {"old": 1})
  monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
  with pytest.raises(UserError, match="no space left on device writing .*result.json"):
    metrics.write_json(str(path), {"new": 2})
  assert json.load(open(path)) == {"old": 1} and not os.path.exists(str(path) + ".tmp"), FAULTS["disk_full_json"]


@pytest.fixture
def tmpfs(tmp_path):
  mount = tmp_path / "small_disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip("cannot mount a tmpfs here (not root?); the in-process disk-full test covers the messages")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount, leave: int) -> None:
  free = shutil.disk_usage(mount).free
  with open(mount / f"filler{len(list(mount.glob('filler*')))}", "wb") as f:
    f.write(b"\0" * max(free - leave, 0))


def test_a_real_full_disk_keeps_the_last_checkpoint(shared, tmpfs):
  run = tmpfs / "run"
  shutil.copytree(shared / "run", run, ignore=shutil.ignore_patterns("tensorboard"))
  _fill(tmpfs, leave=48 * 1024)  # room for logs and metrics, not for a checkpoint
  r = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.outer.steps=8")
  assert r.returncode == 2
  line = error_line(r)
  assert "no space left on device writing" in line and "is intact" in line, FAULTS["disk_full_checkpoint"]["sees"]
  kept = steps(run)
  assert restore(run)[0] == kept[-1] >= 4
  leftovers = [p for p in os.listdir(run / "checkpoints") if "tmp" in p]
  assert not leftovers, leftovers
  _fill(tmpfs, leave=0)
  old = (run / "config_distill.json").read_bytes()
  r = cli(shared / "cache", f"--workdir={run}", *ARGS, "--config.outer.steps=8")
  assert r.returncode == 2 and "no space left on device writing" in error_line(r), FAULTS["disk_full_json"]["sees"]
  assert (run / "config_distill.json").read_bytes() == old and not list(run.glob("*.tmp"))


def test_huge_max_len_fails_fast_within_a_memory_bound(tmp_path):
  import resource

  def bound():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # tokenizing 67k rows × 100,000 needs far more
  start = time.time()
  r = cli(tmp_path / "cache", f"--workdir={tmp_path}/w", "--config.data.max_len=100000",
          config="configs/paper.py:sst2", preexec_fn=bound, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out, err = r.communicate(timeout=300)
  r.stderr = err
  assert r.returncode == 2, err[-3000:]
  assert "data.max_len=100000 exceeds the model's 512 position embeddings" in error_line(r), FAULTS["huge_max_len"]
  assert time.time() - start < 60 and not os.path.exists(tmp_path / "w")
