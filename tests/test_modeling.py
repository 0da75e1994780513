"""Accuracy over a split: batching by length changes no prediction."""

import dataclasses

import jax
import numpy as np

from distill_jax import data, modeling
from distill_jax.models import bert


def test_accuracy_in_length_batches_matches_full_length_predictions(tiny_bert_config):
  config = dataclasses.replace(tiny_bert_config, max_position_embeddings=40)
  model = bert.BertForSequenceClassification(config, pooling="mean")
  params = bert.init_params(model, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 41, 37)
  mask = (np.arange(40)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask > 0, rng.integers(1, 50, mask.shape), 0).astype(np.int32)
  full = np.asarray(modeling.classify(model, params, dict(input_ids=ids, attention_mask=mask))).argmax(-1)
  labels = np.where(np.arange(37) < 20, full, 1 - full).astype(np.int32)  # 20 right, 17 wrong
  split = data.Split(ids, mask, labels, [""] * 37)
  assert modeling.accuracy(model, params, split, batch_size=8) == 20 / 37
