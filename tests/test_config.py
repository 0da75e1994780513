"""The config's gate: old key names keep working, and impossible values fail before any data is read."""

import ml_collections
import numpy as np
import pytest

from configs import default, paper
from conftest import SHARED_DATA
from distill_jax import config, data
from distill_jax.errors import UserError


def test_old_flag_names_are_renamed_with_a_note(capsys):
  argv = ["prog", "--config.inner_steps=30", "--config.checkpoint", "runs/x", "--config.inner.lr=0.1",
          "--config.max_len=32"]
  assert config.rename_flags(argv) == ["prog", "--config.inner.steps=30", "--config.evaluate.checkpoint", "runs/x",
                                       "--config.inner.lr=0.1", "--config.data.max_len=32"]
  assert "--config.inner_steps is now --config.inner.steps" in capsys.readouterr().err


def test_saved_configs_from_before_the_grouping_are_upgraded():
  old = {"dataset": "sst2", "max_len": 64, "n_per_class": 10, "inner_steps": 7, "checkpoint": "",
         "inner": {"lr": 0.01}, "synthetic": {"kind": "direct"}}
  new = config.upgrade(old)
  assert new["data"] == {"dataset": "sst2", "max_len": 64}
  assert new["inner"] == {"lr": 0.01, "steps": 7} and new["synthetic"] == {"kind": "direct", "n_per_class": 10}
  assert new["evaluate"] == {"checkpoint": ""} and "inner_steps" not in new
  assert old["inner"] == {"lr": 0.01}  # the input is left as it was
  assert config.get(new, "inner.steps") == 7 and config.get(new, "inner.nope", "x") == "x"


def test_a_config_file_that_still_sets_old_names_is_upgraded():
  c = default.get_config()
  c.inner_steps = 3  # what an old personal config file does; unlocked, so it would be silently ignored
  c.dataset = "imdb"
  up = config.upgrade_config(c)
  assert up.inner.steps == 3 and up.data.dataset == "imdb" and "inner_steps" not in up and "dataset" not in up
  assert config.upgrade_config(default.get_config()).to_dict() == default.get_config().to_dict()


@pytest.mark.parametrize("key,value,message", [
    ("outer.lr", float("inf"), "outer.lr must be a finite number > 0"),
    ("inner.lr", float("nan"), "inner.lr must be a finite number > 0"),
    ("outer.checkpoint_every", 0, "outer.checkpoint_every must be >= 1"),
    ("train.chunk_steps", -1, "train.chunk_steps and train.eval_batch_size must be >= 1"),
    ("data.max_len", 100000, "data.max_len=100000 exceeds the model's 512 position embeddings"),
    ("data.dataset", "nosuch", "unknown dataset 'nosuch'"),
    ("model.size", "huge", "model.size must be one of"),
    ("evaluate.coresets", ("random", "kmeans"), "evaluate.coresets must hold distinct methods of ('random', "),
    ("evaluate.coresets", ("herding", "herding"), "evaluate.coresets must hold distinct methods"),
    ("evaluate.coreset_pool", -1, "evaluate.coreset_pool must be >= 0"),
])
def test_validate_rejects_impossible_values_in_one_line(key, value, message):
  cfg = paper.get_config("sst2")
  group, name = key.split(".")
  with cfg.ignore_type():
    cfg[group][name] = value
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
    config.validate(cfg)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides,message", [
    ({"inner.attention_weight": -1.0}, "inner.attention_weight must be a finite number >= 0"),
    ({"synthetic.attention_labels": True, "synthetic.kind": "addressable", "synthetic.num_bases": 2},
     "synthetic.attention_labels needs --config.synthetic.kind=direct or tokens"),
    ({"synthetic.attention_labels": True, "synthetic.init": "random"}, "use --config.synthetic.init=real"),
    ({"synthetic.attention_labels": True, "synthetic.kind": "tokens", "synthetic.superpose": 3},
     "synthetic.attention_labels needs --config.synthetic.superpose=1"),
    ({"synthetic.attention_teacher": "runs/teacher"}, "synthetic.attention_teacher needs "
     "--config.synthetic.attention_labels=True"),
    ({"synthetic.attention_labels": True, "synthetic.attention_teacher": "/no/such/run"},
     "synthetic.attention_teacher='/no/such/run' is not a directory; pass the --workdir of a mode=train run"),
])
def test_attention_label_settings_that_cannot_work_are_one_line_errors(overrides, message):
  from distill_jax import experiment
  with pytest.raises(UserError, match=message) as e:
    config.validate(experiment.with_overrides(paper.get_config("sst2"), overrides))
  assert "\n" not in str(e.value)


def test_every_shipped_config_validates():
  from configs import addressable, agnews, imdb, minilm, recipes, remedies, rotten_tomatoes, sst2, trec
  configs = [default.get_config(), minilm.get_config(), addressable.get_config("ag_news")]
  configs += [paper.get_config(d) for d in ("sst2", "rotten_tomatoes", "imdb", "ag_news", "trec")]
  configs += [m.get_config(v) for m in (sst2, rotten_tomatoes, imdb, agnews, trec) for v in ("minilm", "tiny")]
  configs += [remedies.get_config(v) for v in ("minilm", "tiny_adam", "tiny_tokens", "tiny_mean_tokens",
                                                "tiny_superpose")]
  for c in configs:
    config.validate(c)
  assert isinstance(recipes.get("trec"), ml_collections.ConfigDict)


@pytest.mark.parametrize("dataset", ["sst2", "rotten_tomatoes", "imdb", "ag_news", "trec"])
def test_each_tiny_recipe_superposes_no_more_rows_than_its_smallest_class_keeps(dataset):
  """The token set draws n_per_class × superpose training rows of every class, after data.holdout_rows
  (a recipe that broke that stopped before its first step)."""
  from configs import recipes
  c = recipes.get(dataset, "tiny")
  spec = data.get_spec(dataset)
  _, labels = data.load_texts(dataset, spec.train_split, SHARED_DATA)
  for seed in range(10):  # the seed draws the held-out rows: results are checked on other seeds
    kept = np.delete(labels, data.splits.held_out_indices(len(labels), c.data.holdout_rows, seed))
    fewest = np.bincount(kept, minlength=spec.num_classes).min()
    assert c.synthetic.n_per_class * c.synthetic.superpose <= fewest, (dataset, seed, fewest)
