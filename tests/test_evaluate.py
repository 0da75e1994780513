"""evaluate.cached / ceiling_key / set_digest: a measurement is kept once and reused only for the same settings."""

import json
import os

import numpy as np

from configs import default
from distill_jax import evaluate


def _counting(value: float):
  calls = []

  def compute():
    calls.append(1)
    return dict(mean=value, std=0.0)
  return compute, calls


def test_cached_measures_once_per_key(tmp_path):
  folder = str(tmp_path / "ceilings")
  compute, calls = _counting(0.5)
  first = evaluate.cached(folder, "ceiling-sst2", {"a": 1}, compute)
  again = evaluate.cached(folder, "ceiling-sst2", {"a": 1}, compute)
  assert len(calls) == 1 and first == dict(mean=0.5, std=0.0)
  assert again["mean"] == 0.5 and os.path.exists(again["reused_from"])
  other = evaluate.cached(folder, "ceiling-sst2", {"a": 2}, compute)
  assert len(calls) == 2 and "reused_from" not in other


def test_cached_replaces_a_damaged_file(tmp_path):
  folder = str(tmp_path)
  compute, calls = _counting(0.7)
  evaluate.cached(folder, "ceiling-trec", {"a": 1}, compute)
  (path,) = [os.path.join(folder, f) for f in os.listdir(folder)]
  with open(path, "w") as f:
    f.write('{"key": ')  # cut short, as by a full disk
  assert "reused_from" not in evaluate.cached(folder, "ceiling-trec", {"a": 1}, compute)
  assert len(calls) == 2 and json.load(open(path))["result"]["mean"] == 0.7


def test_ceiling_key_ignores_the_set_but_not_the_inner_loop():
  base = default.get_config()
  key = evaluate.ceiling_key(base)
  other_budget = default.get_config()
  other_budget.synthetic.n_per_class = 10
  other_budget.outer.steps = 100
  assert evaluate.ceiling_key(other_budget) == key
  for section, field, value in (("inner", "steps", 3), ("data", "eval_split", "test"), ("evaluate", "seeds", 2)):
    changed = default.get_config()
    changed[section][field] = value
    assert evaluate.ceiling_key(changed) != key, (section, field)


def test_set_digest_tells_sets_apart():
  """A kept evaluation part is reused only for the very set it measured (a resumed distillation's differs)."""
  s = {"inputs_embeds": np.zeros((2, 3), np.float32), "step_sizes": np.ones(3, np.float32)}
  digest = evaluate.set_digest({k: v.copy() for k, v in s.items()})
  assert evaluate.set_digest(s) == digest
  assert evaluate.set_digest(dict(s, step_sizes=np.array([1, 1, 1.0001], np.float32))) != digest
  assert evaluate.set_digest(dict(s, inputs_embeds=np.zeros((3, 2), np.float32))) != digest
