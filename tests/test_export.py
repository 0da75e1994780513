"""Exported sets: the files round-trip, bad paths and full disks are one-line errors, and the PyTorch
example trains on an export with the inner loop's own recipe."""

from __future__ import annotations

import ast
import errno
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

import distill_jax
from distill_jax import export, fit, inner, synthetic
from distill_jax.errors import UserError
from distill_jax.models import bert, hf

from conftest import REPO

M, L, H, K, T = 4, 6, 16, 12, 5
TINY = bert.BertConfig(vocab_size=50, hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=16, num_labels=2,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CONFIG = {"synthetic": {"kind": "direct"}, "inner": {"optimizer": "sgd", "momentum": 0.9, "batch_size": 0},
          "model": {"pooling": "cls"}, "init": {"kind": "random"}, "evaluate": {"lr_grid": (0.01, 0.1)}}


def _direct_set(num_classes: int = 2) -> dict:
  """`Direct.materialize` with learned soft labels and some padding."""
  shape = synthetic.SetShape(M, L, H, num_classes, "soft")
  embeds = jax.random.normal(jax.random.PRNGKey(0), (M, L, H))
  mask = (np.arange(L)[None] < np.array([L, L - 2, 3, L])[:, None]).astype(np.int32)
  syn = synthetic.Direct(shape)
  params, static = syn.init(embeds, mask, np.arange(M) % num_classes)
  params["labels"] = params["labels"] + jax.random.normal(jax.random.PRNGKey(1), params["labels"].shape)
  return syn.materialize(params, static)


def _tokens_set(num_classes: int = 2) -> dict:
  """`Tokens.materialize`: distributions over K candidate tokens of the tiny vocabulary."""
  shape = synthetic.SetShape(M, L, H, num_classes)
  rng = np.random.default_rng(0)
  vocab = np.sort(rng.choice(np.arange(1, TINY.vocab_size), K, replace=False)).astype(np.int32)
  ids = vocab[rng.integers(0, K, (M, L))]
  syn = synthetic.Tokens(shape, logit_scale=2.0)
  params, static = syn.init(ids, np.ones((M, L), np.int32), np.arange(M) % num_classes, vocab)
  return syn.materialize(params, static)


def _attention_set() -> dict:
  """`_direct_set` with attention labels of 1 layer × 2 heads (`synthetic.WithAttention.materialize`)."""
  arrays = _direct_set()
  logits = jax.random.normal(jax.random.PRNGKey(2), (M, 1, 2, L, L))
  return {**arrays, "attention": synthetic.attention_targets(logits, jnp.asarray(arrays["attention_mask"]))}


def _save(directory, arrays: dict, lrs=None, config: dict = CONFIG, **kw) -> str:
  lrs = np.linspace(0.05, 0.02, T, dtype=np.float32) if lrs is None else lrs
  names = [f"class{c}" for c in range(arrays["targets"].shape[1])]
  return export.save_set(str(directory), arrays, lrs, config=config, label_names=names,
                         model_config=TINY.to_dict(), **kw)


def _lines(directory) -> list[dict]:
  with open(os.path.join(directory, export.LISTING_FILE)) as f:
    return [json.loads(line) for line in f]


def test_an_embedding_set_round_trips(tmp_path):
  arrays = _direct_set(num_classes=3)
  texts = [f"[CLS] example {i} [SEP]" for i in range(M)]
  lrs = np.linspace(0.05, 0.02, T, dtype=np.float32)
  directory = _save(tmp_path / "export", arrays, lrs, texts=texts)
  assert sorted(os.listdir(directory)) == ["set.jsonl", "set.safetensors"]  # no staging files left
  for path in (directory, os.path.join(directory, "set.safetensors")):
    got = distill_jax.load_distilled(path)
    assert set(got) == {*arrays, "step_sizes", "inputs", "config", "label_names", "texts", "model_config"}
    for key, value in arrays.items():
      np.testing.assert_array_equal(got[key], np.asarray(value))
      assert got[key].dtype == (np.int32 if key == "attention_mask" else np.float32)
    np.testing.assert_array_equal(got["step_sizes"], lrs)
    assert got["config"] == json.loads(json.dumps(CONFIG))  # tuples come back as lists
    assert got["label_names"] == ["class0", "class1", "class2"]
    assert got["texts"] == texts and got["model_config"] == TINY.to_dict()
  targets = np.asarray(arrays["targets"])
  lines = _lines(directory)
  assert [line["index"] for line in lines] == list(range(M))
  assert [line["label"] for line in lines] == np.argmax(targets, -1).tolist()
  assert [line["label_name"] for line in lines] == [f"class{i}" for i in np.argmax(targets, -1)]
  np.testing.assert_allclose([line["targets"] for line in lines], targets, rtol=1e-6)
  assert [line["text"] for line in lines] == texts


def test_a_tokens_set_round_trips_and_replaces_an_older_export(tmp_path):
  _save(tmp_path, _direct_set(), texts=["old"] * M)
  arrays = _tokens_set()
  lrs = np.full((T, 4), 0.01, np.float32)  # per-group step sizes
  _save(tmp_path, arrays, lrs, config={**CONFIG, "synthetic": {"kind": "tokens"}})
  got = export.load_distilled(str(tmp_path))
  assert "inputs_embeds" not in got and got["texts"] is None
  for key, value in arrays.items():
    np.testing.assert_array_equal(got[key], np.asarray(value))
  assert got["token_vocab"].dtype == np.int32 and got["token_vocab"].shape == (M, K)
  np.testing.assert_array_equal(got["step_sizes"], lrs)
  assert got["config"]["synthetic"]["kind"] == "tokens"
  assert all("text" not in line for line in _lines(tmp_path)) and len(_lines(tmp_path)) == M


def test_attention_labels_round_trip_and_mark_the_format_version(tmp_path):
  from safetensors import safe_open
  arrays = _direct_set()
  attention = _attention_set()["attention"]
  got = export.load_distilled(_save(tmp_path / "with", {**arrays, "attention": attention}))
  np.testing.assert_array_equal(got["attention"], np.asarray(attention))
  assert got["attention"].dtype == np.float32 and got["inputs"] == "embeddings"
  version = lambda d: int(safe_open(os.path.join(d, export.SET_FILE), "numpy").metadata()["format_version"])
  assert version(tmp_path / "with") == 2  # older readers, which would train without the KL, refuse it
  assert version(_save(tmp_path / "without", arrays)) == 1 and "attention" not in export.load_distilled(
      str(tmp_path / "without"))
  with pytest.raises(ValueError, match="attention"):
    _save(tmp_path / "bad", {**arrays, "attention": attention[:, :, :, :3]})


def test_a_missing_path_is_a_one_line_user_error(tmp_path):
  for path in (tmp_path / "nowhere", tmp_path):  # nothing there; a directory without a set
    with pytest.raises(UserError, match="no distilled set at") as e:
      export.load_distilled(str(path))
    assert "\n" not in str(e.value)


def test_a_file_that_is_not_a_set_is_a_one_line_user_error(tmp_path):
  (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
  save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "weights.safetensors"))  # a tensor file, not ours
  directory = _save(tmp_path / "export", _direct_set())
  for path in (tmp_path / "garbage.safetensors", tmp_path / "weights.safetensors",
               os.path.join(directory, "set.jsonl")):
    with pytest.raises(UserError, match="is not a distilled set of distill_jax") as e:
      export.load_distilled(str(path))
    assert "\n" not in str(e.value)


def test_a_set_of_a_newer_format_is_refused(tmp_path):
  path = str(tmp_path / "set.safetensors")
  save_file({"w": np.zeros(3, np.float32)}, path, metadata={"format": export.FORMAT, "format_version": "99"})
  with pytest.raises(UserError, match="format version 99.*upgrade distill_jax"):
    export.load_distilled(path)


@pytest.mark.parametrize("failing_write", [1, 2])  # the listing, or the set file after the listing is staged
def test_a_full_disk_is_a_user_error_and_leaves_the_previous_set(tmp_path, monkeypatch, failing_write):
  old = _save(tmp_path / "old", _direct_set(), texts=["old"] * M)
  fresh = tmp_path / "fresh"
  real_fsync, calls = os.fsync, []

  def fsync(fd):
    calls.append(fd)
    if len(calls) == failing_write:
      raise OSError(errno.ENOSPC, "No space left on device")
    real_fsync(fd)

  monkeypatch.setattr(export.os, "fsync", fsync)
  for directory in (old, fresh):
    calls.clear()
    with pytest.raises(UserError, match="^no space left on device writing .*set\\.") as e:
      _save(directory, _tokens_set())
    assert "\n" not in str(e.value)
  assert os.listdir(fresh) == []
  assert sorted(os.listdir(old)) == ["set.jsonl", "set.safetensors"]
  assert export.load_distilled(old)["texts"] == ["old"] * M and _lines(old)[0]["text"] == "old"


def test_export_needs_neither_jax_nor_torch():
  """So `distill_jax.load_distilled` serves a PyTorch-only user (once the package import itself is light)."""
  tree = ast.parse(open(os.path.join(REPO, "distill_jax", "export.py")).read())
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  assert not {m for m in imported if m.split(".")[0] in ("jax", "jaxlib", "flax", "chex", "optax", "torch")}


def test_arrays_that_are_not_a_materialized_set_are_refused_before_writing(tmp_path):
  arrays = _direct_set()
  with pytest.raises(ValueError, match="keys"):
    _save(tmp_path, {**arrays, "labels": np.zeros(M)})
  with pytest.raises(ValueError, match="3 label names"):
    export.save_set(str(tmp_path), arrays, np.ones(T), config={}, label_names=["a", "b", "c"])
  with pytest.raises(ValueError, match="texts for 4 examples"):
    _save(tmp_path, arrays, texts=["one"])
  assert os.listdir(tmp_path) == []


def test_an_unwritable_directory_is_a_one_line_user_error(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(UserError, match="^cannot write .*a_file .*export to a writable directory$"):
    _save(tmp_path / "a_file", _direct_set())


# ---- the PyTorch example --------------------------------------------------------------------------

# Marked rather than skipped module-wide, so the tests above run without torch.
needs_torch = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers")),
                                 reason="the example needs torch and transformers")


def _example():
  path = os.path.join(REPO, "examples", "train_torch_on_distilled.py")
  spec = importlib.util.spec_from_file_location("train_torch_on_distilled", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@needs_torch
@pytest.mark.parametrize("make_set", [_direct_set, _tokens_set])
def test_the_torch_example_trains_a_fresh_bert_on_an_export(tmp_path, capsys, make_set):
  directory = _save(tmp_path, make_set(), np.full(12, 0.3, np.float32))
  losses = _example().main(["--set", directory])
  assert len(losses) == 13 and losses[-1] < losses[0] - 0.1, losses
  assert f"trained 12 steps: training loss {losses[0]:.4f} -> {losses[-1]:.4f}" in capsys.readouterr().out
  assert len(_example().main(["--set", directory, "--steps", "3"])) == 4


@needs_torch
def test_the_torch_example_trains_on_minibatches_as_the_config_says(tmp_path):
  minibatches = {**CONFIG, "inner": {**CONFIG["inner"], "batch_size": 2}}  # a random half of the set per step
  losses = _example().train(_save(tmp_path, _direct_set(), np.full(12, 0.1, np.float32), minibatches))
  assert len(losses) == 13 and losses[-1] < losses[0] - 0.1, losses


@needs_torch
def test_the_torch_example_reports_a_bad_path_in_one_line(tmp_path):
  with pytest.raises(SystemExit, match="^error: no distilled set at"):
    _example().main(["--set", str(tmp_path / "nowhere")])


@needs_torch
@pytest.mark.parametrize("make_set,optimizer,groups,pooling", [
    (_direct_set, "sgd", 4, "mean"),  # [T, G] step sizes: embeddings, layer_0, pooler, classifier
    (_tokens_set, "adam", 1, "cls"),  # the word table trains through the token distributions
    (_attention_set, "sgd", 1, "cls"),  # + λ·KL to the attention labels
])
def test_the_torch_example_replays_the_inner_loop(tmp_path, make_set, optimizer, groups, pooling):
  """From the same θ0, its losses are the ones `fit.train_on_set` computes: the recipe is the same."""
  import torch
  arrays = make_set()
  lrs = jnp.asarray(np.random.default_rng(0).uniform(0.01, 0.05, (T, groups) if groups > 1 else (T,)), jnp.float32)
  config = {**CONFIG, "inner": {"optimizer": optimizer, "momentum": 0.8, "adam_eps": 1e-6, "batch_size": 0,
                                "attention_weight": 0.7}, "model": {"pooling": pooling}}
  directory = _save(tmp_path, arrays, lrs, config=config)
  model = bert.BertForSequenceClassification(TINY, pooling=pooling)
  theta0 = bert.init_params(model, jax.random.PRNGKey(3))
  spec = fit.InnerSpec(steps=T, batch_size=0, lr_param="softplus", remat=False,
                      tx=inner.direction(optimizer, momentum=0.8, eps=1e-6), attention_weight=0.7)
  theta_t, jax_losses = fit.train_on_set(model, theta0, arrays, lrs, jax.random.PRNGKey(0), spec)
  example = _example()
  torch_model = example.build_model(export.load_distilled(directory))
  missing, unexpected = torch_model.load_state_dict(
      {k: torch.from_numpy(v.copy()) for k, v in hf.to_hf_state_dict(theta0).items()}, strict=False)
  assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), missing
  torch_losses = example.train(directory, model=torch_model)
  np.testing.assert_allclose(torch_losses[:-1], np.asarray(jax_losses), rtol=2e-5)
  # And so do the trained weights (to float noise, which Adam amplifies where a gradient is ~0).
  for name, value in hf.to_hf_state_dict(theta_t).items():
    np.testing.assert_allclose(torch_model.state_dict()[name].numpy(), value, atol=1e-4, err_msg=name)


@needs_torch
def test_the_torch_example_starts_a_pretrained_set_from_the_checkpoint_body(tmp_path):
  import torch
  example = _example()
  pretrained = example.build_model({"config": {}, "label_names": ["a", "b"], "model_config": TINY.to_dict()})
  pretrained.save_pretrained(tmp_path / "ckpt")
  config = {**CONFIG, "init": {"kind": "pretrained"}, "model": {"pretrained": str(tmp_path / "ckpt")}}
  model = example.build_model(export.load_distilled(_save(tmp_path / "set", _direct_set(), config=config)))
  body, fresh = model.state_dict(), pretrained.state_dict()
  for name in fresh:
    same = torch.equal(body[name], fresh[name])
    assert same != name.startswith("classifier.weight"), name  # the head is re-drawn (modeling.fresh_head)
  assert model.config.hidden_dropout_prob == 0.0
