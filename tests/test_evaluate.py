"""evaluate.cached / ceiling_key: one real-data ceiling per dataset and recipe, measured once."""

import json
import os

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
