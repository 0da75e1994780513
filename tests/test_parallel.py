"""Sharding the outer step over devices changes where it runs, not what it computes.

XLA_FLAGS must be set before jax is imported, so the 4-device half runs in a
subprocess with 4 fake CPU devices. An opt-in test (DISTILL_JAX_TEST_MULTIPROCESS=1)
runs the same check as 2 processes x 2 devices joined by jax.distributed.initialize,
the multi-host code path.
"""

import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest

from distill_jax import parallel
from conftest import REPO

CHILD = r"""
import json
import re
import sys

import jax

if len(sys.argv) > 1:  # multi-process: argv = coordinator address, process count, process id
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from distill_jax import parallel
  parallel.maybe_initialize_distributed(enabled=True, coordinator_address=sys.argv[1],
                                        num_processes=int(sys.argv[2]), process_id=int(sys.argv[3]))
import jax.numpy as jnp
import numpy as np

from configs import default
from distill_jax import distill, fit, modeling, parallel, synthetic
from distill_jax.errors import UserError
from distill_jax.models import bert

K, REAL_BATCH, T = 4, 8, 3
bc = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model = bert.BertForSequenceClassification(bc)
cfg = default.get_config()
cfg.inner.steps = T
init_fn = modeling.make_init_fn(model, cfg.init)
syn = synthetic.Direct(synthetic.SetShape(4, 8, 16, 2))
params, static = syn.init(0.02 * jax.random.normal(jax.random.PRNGKey(1), (4, 8, 16)),
                          np.ones((4, 8), np.int32), np.array([0, 1, 0, 1]))
learned = {"data": params, "lr": synthetic.init_step_sizes(cfg.inner.lr, T, cfg.inner.lr_param)}
rng = np.random.default_rng(0)
real = dict(input_ids=rng.integers(0, 50, (32, 8)).astype(np.int32),
            attention_mask=np.ones((32, 8), np.int32), labels=rng.integers(0, 2, (32,)).astype(np.int32))
spec = fit.InnerSpec.from_config(cfg)
tx = distill.outer_tx(cfg)


def run(mesh):
  meta_loss = distill.make_meta_loss(model, syn, init_fn, spec, REAL_BATCH, K, mesh=mesh)
  step = distill.make_train_step(meta_loss, tx, spec.lr_param, mesh=mesh)
  state = jax.tree_util.tree_map(jnp.array, distill.init_state(learned, tx, 0))  # fresh: it is donated
  args = (state, static, real) if mesh is None else parallel.replicate((state, static, real), mesh)
  compiled = step.lower(*args).compile()  # one compile, reused for both steps
  state, static_, real_ = args
  for _ in range(2):
    state, m = compiled(state, static_, real_)
  return state, m, compiled.as_text()


def error(fn):
  try:
    fn()
  except UserError as e:
    return str(e)
  return None


mesh = parallel.make_mesh()
single, m1, hlo1 = run(None)
sharded, m4, hlo4 = run(mesh)
leaves1, leaves4 = jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded)
print(json.dumps(dict(
    devices=jax.device_count(), mesh_devices=int(mesh.devices.size), mesh_axes=list(mesh.axis_names),
    step=int(sharded["step"]), meta_loss=[float(m1["meta_loss"]), float(m4["meta_loss"])],
    max_diff=max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))
                 for a, b in zip(leaves1, leaves4)),
    x_changed=float(np.max(np.abs(np.asarray(sharded["learned"]["data"]["x"]) - np.asarray(params["x"])))),
    replicated_out=all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == 4 for x in leaves4),
    # One BERT intermediate kernel is [16, 32]; vmapped over K it is [K, 16, 32]. In the
    # partitioned program each device holds K/4 = 1 of them, and 2 of the 8 real rows.
    per_device_init=bool(re.search(r"f32\[1,16,32\]", hlo4)), per_device_rows="s32[2,8]" in hlo4,
    all_reduce=["all-reduce" in hlo1, "all-reduce" in hlo4],
    bad_k=error(lambda: distill.make_meta_loss(model, syn, init_fn, spec, REAL_BATCH, 3, mesh=mesh)),
    bad_batch=error(lambda: distill.make_meta_loss(model, syn, init_fn, spec, 6, K, mesh=mesh)),
    bad_num=error(lambda: parallel.make_mesh(5)),
    two=int(parallel.make_mesh(2).devices.size) if jax.process_count() == 1 else None,
    processes=jax.process_count(),
)))
"""


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
              PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))


def _result(proc: subprocess.CompletedProcess) -> dict:
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_child() -> dict:
  proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=_env(4), capture_output=True, text=True,
                        timeout=300)
  return _result(proc)


def _check_sharded_equals_single(r: dict) -> None:
  assert r["devices"] == r["mesh_devices"] == 4 and r["mesh_axes"] == ["data"]
  assert r["step"] == 2 and r["x_changed"] > 0
  assert r["max_diff"] <= 1e-6, r
  assert abs(r["meta_loss"][0] - r["meta_loss"][1]) <= 1e-6, r
  # Really sharded: K and the real batch are split, gradients are summed across devices,
  # and the new state comes back whole on every device.
  assert r["per_device_init"] and r["per_device_rows"], r
  assert r["all_reduce"] == [False, True], r
  assert r["replicated_out"], r


def test_sharded_step_equals_single_device_step():
  r = _run_child()
  assert r["processes"] == 1
  _check_sharded_equals_single(r)
  # Sizes that do not split over the mesh are a user error naming the fix.
  assert r["bad_k"] == ("outer.inits_per_step=3 must be a multiple of the 4 devices in the mesh; "
                        "use --config.outer.inits_per_step=4 or --config.parallel.num_devices=1")
  assert r["bad_batch"].startswith("outer.real_batch_size=6 must be a multiple of the 4 devices")
  assert "--config.outer.real_batch_size=8" in r["bad_batch"]
  assert r["bad_num"].startswith("parallel.num_devices=5 but 4 devices are visible")
  assert r["two"] == 2


def test_config_defaults_mean_one_device_and_no_distributed_init():
  """Configs without a `parallel` section (or with its defaults) keep today's single-device path."""
  assert parallel.mesh_from_config(ml_collections.ConfigDict({"seed": 0})) is None
  cfg = ml_collections.ConfigDict({"parallel": {"distributed": False, "num_devices": 1}})
  assert parallel.mesh_from_config(cfg) is None
  assert parallel.maybe_initialize_distributed(cfg) is False
  assert parallel.maybe_initialize_distributed(None) is False


@pytest.mark.skipif(os.environ.get("DISTILL_JAX_TEST_MULTIPROCESS") != "1",
                    reason="opt-in (about a minute, opens a localhost port): DISTILL_JAX_TEST_MULTIPROCESS=1")
def test_two_processes_equal_one_device():
  """The multi-host path (distributed init, global mesh, `replicate` from host copies) on one machine."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  procs = [subprocess.Popen([sys.executable, "-c", CHILD, address, "2", str(i)], cwd=REPO, env=_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outs):
    r = _result(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    assert r["processes"] == 2
    _check_sharded_equals_single(r)
