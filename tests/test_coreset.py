"""Coreset selection picks what each method promises, and features see only real tokens."""

import jax
import numpy as np
import pytest

from distill_jax import coreset, data
from distill_jax.errors import UserError
from distill_jax.models import bert


def _covering_radius(x, picks):
  """The largest distance from a row to its nearest pick: what k-center minimises."""
  d = np.linalg.norm(x[:, None] - x[picks][None], axis=-1)
  return d.min(1).max()


def _blobs(rng, centers, per_blob, dim=8, spread=0.1):
  means = 10.0 * rng.normal(size=(centers, dim))
  return np.concatenate([m + spread * rng.normal(size=(per_blob, dim)) for m in means])


@pytest.mark.parametrize("method", coreset.METHODS)
def test_every_method_picks_exactly_n_distinct_rows_per_class_deterministically(method):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 90)
  feats = rng.normal(size=(90, 5)).astype(np.float32)
  idx = coreset.select(method, feats, labels, 4, 3, seed=7)
  assert idx.dtype == np.int64 and len(set(idx.tolist())) == 12
  np.testing.assert_array_equal(labels[idx], np.repeat([0, 1, 2], 4))  # class 0's first
  np.testing.assert_array_equal(idx, coreset.select(method, feats, labels, 4, 3, seed=7))


def test_random_is_the_draw_the_random_baseline_always_made():
  labels = np.random.default_rng(1).integers(0, 2, 50)
  np.testing.assert_array_equal(coreset.select("random", None, labels, 3, 2, seed=5),
                                data.sample_per_class(labels, 3, 2, 5))


def test_kcenter_covers_one_point_per_cluster_and_beats_random_picks():
  rng = np.random.default_rng(0)
  x = _blobs(rng, centers=5, per_blob=20)
  idx = coreset.select("kcenter", x, np.zeros(100, np.int64), 5, 1, seed=0)
  assert sorted(i // 20 for i in idx) == [0, 1, 2, 3, 4]
  y = rng.normal(size=(300, 6))
  picks = coreset.select("kcenter", y, np.zeros(300, np.int64), 10, 1, seed=0)
  first = np.argmin(np.linalg.norm(y - y.mean(0), axis=1))
  assert picks[0] == first  # the point nearest the class mean
  radius = _covering_radius(y, picks)
  assert all(radius <= _covering_radius(y, rng.choice(300, 10, replace=False)) for _ in range(20))


def test_herding_mean_tracks_the_class_mean_better_than_random_picks():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 6)) * np.arange(1, 7)
  picks = coreset.select("herding", x, np.zeros(400, np.int64), 8, 1, seed=0)
  gap = lambda p: np.linalg.norm(x[p].mean(0) - x.mean(0))
  assert all(gap(picks) < gap(rng.choice(400, 8, replace=False)) for _ in range(50))
  assert all(gap(picks[:k]) <= gap(picks[:1]) for k in range(2, 9))  # it keeps getting closer than one pick


def test_kcenter_and_herding_never_repeat_rows_even_among_duplicates():
  x = np.zeros((6, 3))  # every row the same point
  for method in ("kcenter", "herding"):
    assert sorted(coreset.select(method, x, np.zeros(6, np.int64), 6, 1, seed=0)) == list(range(6))


def test_too_few_rows_of_a_class_name_the_fix():
  labels = np.array([0, 0, 0, 1])
  with pytest.raises(UserError, match=r"class 1 has only 1 candidate rows but n_per_class=2; raise "
                                      r"--config.evaluate.coreset_pool"):
    coreset.select("kcenter", np.zeros((4, 2)), labels, 2, 2, seed=0)
  with pytest.raises(UserError, match="unknown coreset method 'kmeans'"):
    coreset.select("kmeans", None, labels, 1, 2, seed=0)


def test_candidates_cap_the_pool_with_a_seeded_sorted_draw():
  pool = np.arange(10, 110)
  capped = coreset.candidates(pool, 30, seed=3)
  assert len(capped) == 30 and np.all(np.diff(capped) > 0) and set(capped) <= set(pool)
  np.testing.assert_array_equal(capped, coreset.candidates(pool, 30, seed=3))
  assert coreset.candidates(pool, 0, seed=3) is pool and coreset.candidates(pool, 500, seed=3) is pool


def test_within_bytes_stays_in_budget_and_deals_classes_in_turn():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], [10, 20, 30])
  row_bytes = 2 * rng.integers(3, 9, 60)
  idx = coreset.within_bytes(labels, row_bytes, 200, 3, seed=0)
  assert 0 < row_bytes[idx].sum() <= 200 and len(set(idx.tolist())) == len(idx)
  counts = np.bincount(labels[idx], minlength=3)
  assert counts.max() - counts.min() <= 1
  assert len(coreset.within_bytes(labels, row_bytes, 10**9, 3, seed=0)) == 60
  assert len(coreset.within_bytes(labels, row_bytes, 1, 3, seed=0)) == 0


def test_features_are_masked_means_that_padding_never_changes(tiny_bert_config):
  model = bert.BertForSequenceClassification(tiny_bert_config, pooling="cls")
  params = bert.init_params(model, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  mask = (np.arange(10)[None] < np.array([[10], [3], [7], [1], [5]])).astype(np.int32)
  ids = np.where(mask > 0, rng.integers(1, 50, (5, 10)), 0).astype(np.int32)
  split = data.Split(ids, mask, np.zeros(5, np.int32), [""] * 5)
  feats = coreset.features(model, params, split, batch_size=4)  # the last batch is padded
  assert feats.shape == (5, 16) and feats.dtype == np.float32
  junk = np.where(mask > 0, ids, rng.integers(1, 50, (5, 10))).astype(np.int32)  # other ids under the padding
  np.testing.assert_allclose(coreset.features(model, params, data.Split(junk, mask, split.labels, split.texts), 4),
                             feats, atol=1e-6)
  alone = coreset.features(model, params, split.subset([1]), batch_size=4)  # batch neighbours do not matter
  np.testing.assert_allclose(alone[0], feats[1], atol=1e-6)
  assert np.abs(feats[0] - feats[1]).max() > 1e-4  # and real tokens do
