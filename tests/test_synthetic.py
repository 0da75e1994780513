"""Synthetic-set parametrisations: shapes, gradient flow, storage, checkpoint round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import checkpoint, data, synthetic
from distill_jax.errors import UserError

SHAPE = synthetic.SetShape(num_examples=6, seq_len=5, hidden=8, num_classes=3, label_mode="soft")
LABELS = np.array([0, 0, 1, 1, 2, 2])


def _init(kind):
  syn = synthetic.build(kind, SHAPE, num_bases=4)
  embeds = jax.random.normal(jax.random.PRNGKey(0), (6, 5, 8))
  return syn, *syn.init(embeds, np.ones((6, 5), np.int32), LABELS)


@pytest.mark.parametrize("kind", ["direct", "addressable"])
def test_materialize_shapes_and_initial_labels(kind):
  syn, params, static = _init(kind)
  out = syn.materialize(params, static)
  assert out["inputs_embeds"].shape == (6, 5, 8)
  assert out["attention_mask"].shape == (6, 5)
  assert out["targets"].shape == (6, 3)
  np.testing.assert_array_equal(np.argmax(out["targets"], -1), LABELS)
  np.testing.assert_allclose(out["targets"].sum(-1), 1.0, rtol=1e-6)


def test_addressable_reconstruction_is_addresses_times_bases():
  syn, params, static = _init("addressable")
  a = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
  params = dict(params, addresses=a)
  x = syn.materialize(params, static)["inputs_embeds"]
  expect = np.einsum("mk,klh->mlh", np.asarray(a), np.asarray(params["bases"]))
  np.testing.assert_allclose(x, expect, rtol=1e-5, atol=1e-6)


def test_addressable_gradients_reach_bases_addresses_and_label_memories():
  syn, params, static = _init("addressable")

  def loss(p):
    out = syn.materialize(p, static)
    return jnp.sum(out["inputs_embeds"] ** 2) + jnp.sum(out["targets"] * jnp.arange(3.0))

  g = jax.grad(loss)(params)
  for k in ("bases", "addresses", "label_bases"):
    assert np.abs(np.asarray(g[k])).max() > 0, k


def test_storage_addressable_is_smaller_than_direct_for_the_same_examples():
  _, direct, _ = _init("direct")
  _, addr, _ = _init("addressable")
  assert synthetic.num_learned_floats(direct) == 6 * 5 * 8 + 6 * 3
  assert synthetic.num_learned_floats(addr) == 4 * 5 * 8 + 6 * 4 + 4 * 3


def test_storage_counts_every_learned_float_against_the_training_token_ids():
  _, params, _ = _init("direct")  # 6 examples × 5 positions × 8 dims, 6 × 3 soft-label logits
  learned = {"data": params, "lr": jnp.zeros((10,))}  # and 10 step sizes
  train_mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]])  # 6 real tokens
  got = synthetic.storage(learned, train_mask)
  assert got["floats"] == 240 + 18 + 10 and got["bytes"] == 4 * 268
  assert got["train_token_bytes"] == 2 * 6 and got["ratio"] == 1072 / 12
  np.testing.assert_array_equal(synthetic.token_bytes(train_mask), [6, 4, 2])
  with_ids = synthetic.storage(learned, train_mask, token_ids=5)  # a token set's ids cost 2 B each
  assert with_ids["bytes"] == 4 * 268 + 2 * 5 and with_ids["token_ids"] == 5


def test_a_token_set_needs_its_candidate_ids_besides_its_floats():
  vocab = np.broadcast_to(np.arange(7), (3, 7))  # one candidate vocabulary, repeated per example
  assert synthetic.defining_token_ids({"vocab": vocab}) == 7
  assert synthetic.defining_token_ids({"token_vocab": vocab}) == 7  # an exported set's name for it
  assert synthetic.defining_token_ids({"vocab": vocab, "candidates": np.zeros((3, 4, 2))}) == 3 * 4 * 2
  assert synthetic.defining_token_ids({"labels": np.zeros(3), "mask": np.ones((3, 4))}) == 0


def test_checkpoint_round_trip(tmp_path):
  _, params, static = _init("addressable")
  mngr = checkpoint.manager(str(tmp_path / "ck"))
  checkpoint.save(mngr, 1, {"data": params, "static": static}, {"synthetic": {"kind": "addressable"}})
  back = checkpoint.restore_state(mngr, {"data": params, "static": static})
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves({"data": params, "static": static})):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert checkpoint.restore_config(mngr) == {"synthetic": {"kind": "addressable"}}


def test_step_sizes_round_trip_and_errors():
  for param in ("softplus", "log"):
    raw = synthetic.init_step_sizes(0.03, 4, param)
    np.testing.assert_allclose(synthetic.step_sizes(raw, param), 0.03, rtol=1e-5)
  with pytest.raises(UserError):
    synthetic.init_step_sizes(0.0, 4, "softplus")
  with pytest.raises(UserError):
    synthetic.build("addressable", SHAPE, num_bases=0)
  with pytest.raises(UserError):
    synthetic.SetShape(1, 1, 1, 2, label_mode="nope")


def test_candidate_vocab_keeps_the_examples_tokens_then_the_most_frequent():
  train = np.array([[101, 7, 7, 7, 9, 102, 0], [101, 8, 8, 5, 102, 0, 0]])
  vocab = synthetic.candidate_vocab(train, np.array([[101, 5, 102]]), size=5)
  np.testing.assert_array_equal(vocab, [5, 7, 8, 101, 102])  # 7 (×3) and 8 (×2) beat 9; [PAD] never
  with pytest.raises(UserError, match="vocab_size"):
    synthetic.candidate_vocab(train, np.array([[101, 5, 102]]), size=2)


def test_tokens_start_near_their_examples_and_materialize_distributions():
  shape = synthetic.SetShape(2, 3, 8, 2, "hard")
  vocab = np.array([0, 5, 7, 101, 102], np.int32)
  ids = np.array([[101, 5, 102], [101, 7, 0]])
  params, static = synthetic.Tokens(shape).init(ids, np.ones((2, 3), np.int32), np.array([0, 1]), vocab)
  d = synthetic.Tokens(shape).materialize(params, static)
  assert d["token_probs"].shape == (2, 3, 5) and d["token_vocab"].shape == (2, 5)
  np.testing.assert_allclose(d["token_probs"].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(vocab[np.argmax(d["token_probs"], -1)], ids)
  assert float(d["token_probs"].max(-1).min()) > 0.99  # exp(10) against 4 others
  spread = synthetic.Tokens(shape, logit_scale=1.0).init(ids, np.ones((2, 3), np.int32), np.array([0, 1]), vocab)[0]
  own = jax.nn.softmax(spread["logits"], -1).max(-1)
  np.testing.assert_allclose(own, np.e / (np.e + 4), rtol=1e-6)  # exp(1) against 4 others at exp(0)
  with pytest.raises(UserError, match="outside the candidate vocabulary"):
    synthetic.Tokens(shape).init(np.array([[101, 6, 102]] * 2), np.ones((2, 3), np.int32),
                                 np.array([0, 1]), vocab)


def test_superposed_tokens_start_as_each_positions_token_shares():
  shape = synthetic.SetShape(2, 3, 8, 2, "hard")
  vocab = np.array([0, 5, 7, 101, 102], np.int32)
  ids = np.array([[[101, 5, 102], [101, 7, 0], [101, 7, 0]],  # example 0 superposes three sentences
                  [[101, 7, 0], [101, 5, 0], [101, 0, 0]]])
  params, static = synthetic.Tokens(shape, logit_scale=10.0).init(ids, (ids > 0).astype(np.int32),
                                                                  np.array([0, 1]), vocab)
  p = np.asarray(jax.nn.softmax(params["logits"], -1))
  np.testing.assert_array_equal(static["mask"], [[1, 1, 1], [1, 1, 0]])  # a position is real if any source's is
  # Position 1 of example 0 holds 5 once and 7 twice: logits log(1 + share·(e^10 − 1)).
  np.testing.assert_allclose(p[0, 1, 2] / p[0, 1, 1], (1 + 2 / 3 * np.expm1(10)) / (1 + 1 / 3 * np.expm1(10)),
                             rtol=1e-5)
  assert p[0, 1, 1] + p[0, 1, 2] > 0.99
  # Padding in some sources is not counted; only 102 is real at position 2 of example 0.
  assert p[0, 2, 4] > 0.99
  np.testing.assert_allclose(p[1, 1, 1], p[1, 1, 2], rtol=1e-6)  # 7 and 5 once each, the [PAD] of source 3 ignored


def test_sparse_token_sets_store_each_positions_candidates_and_materialize_the_same_start():
  shape = synthetic.SetShape(2, 3, 8, 2, "hard")
  vocab = np.array([0, 5, 7, 101, 102], np.int32)
  ids = np.array([[[101, 5, 102], [101, 7, 0], [101, 7, 0]],
                  [[101, 7, 0], [101, 5, 0], [101, 0, 0]]])
  args = (ids, (ids > 0).astype(np.int32), np.array([0, 1]), vocab)
  dense_params, dense_static = synthetic.Tokens(shape, 20.0).init(*args)
  sparse = synthetic.Tokens(shape, 20.0, candidates_per_position=2)
  params, static = sparse.init(*args)
  assert params["logits"].shape == (2, 3, 2) and static["candidates"].shape == (2, 3, 2)
  assert synthetic.num_learned_floats(params) == 12  # against 30 for the dense logits
  # Every position holds at most 2 distinct tokens, so the start is the dense one up to its e^-20 tail.
  dense, out = (s.materialize(p, st)["token_probs"] for s, p, st in
                ((synthetic.Tokens(shape, 20.0), dense_params, dense_static), (sparse, params, static)))
  np.testing.assert_allclose(out, dense, atol=1e-7)
  assert np.all(np.asarray(out)[0, 1, [0, 3, 4]] == 0.0)  # off-candidate tokens hold exactly nothing
  # The outer gradient reaches the stored logits through the scatter back to [M, L, V].
  g = jax.grad(lambda lg: sparse.materialize({**params, "logits": lg}, static)["token_probs"][0, 1, 2])(
      params["logits"])
  assert np.abs(np.asarray(g[0, 1])).sum() > 0 and np.all(np.asarray(g[1]) == 0)


def test_sparse_token_sets_keep_each_positions_most_frequent_tokens():
  shape = synthetic.SetShape(1, 2, 8, 2, "hard")
  vocab = np.array([5, 6, 7, 101], np.int32)
  ids = np.array([[[101, 5], [101, 7], [101, 7], [101, 6], [101, 7], [101, 6]]])  # position 1: 7 ×3, 6 ×2, 5 ×1
  params, static = synthetic.Tokens(shape, 20.0, candidates_per_position=2).init(
      ids, np.ones_like(ids), np.array([0]), vocab)
  assert set(np.asarray(vocab[static["candidates"][0, 1]]).tolist()) == {6, 7}
  p = np.asarray(synthetic.Tokens(shape, 20.0, 2).materialize(params, static)["token_probs"])[0, 1]
  np.testing.assert_allclose(p[[1, 2]], [0.4, 0.6], rtol=1e-5)  # the kept shares, renormalised


def test_distinctive_candidates_keep_what_separates_the_classes_over_the_frequent_shared_words():
  shape = synthetic.SetShape(2, 3, 8, 2, "hard")
  vocab = np.array([5, 6, 7, 8, 101], np.int32)  # 5 ("the") as often in both classes; 6, 7 class 0's; 8 class 1's
  ids = np.array([[[101, 5, 5], [101, 5, 6], [101, 5, 7]],
                  [[101, 5, 8], [101, 5, 5], [101, 5, 8]]])
  args = (ids, np.ones_like(ids), np.array([0, 1]), vocab)
  frequent = synthetic.Tokens(shape, 20.0, candidates_per_position=1).init(*args)[1]["candidates"]
  assert vocab[frequent[0, 1, 0]] == 5  # position 1's most frequent token: the shared word
  syn = synthetic.Tokens(shape, 20.0, candidates_per_position=1, candidate_choice="distinctive")
  params, static = syn.init(*args)
  picked = vocab[np.asarray(static["candidates"])[:, :, 0]]
  # The separating words come first (then shared ones fill the slots left): 8, seen twice, before 6 and 7.
  assert picked[1, 0] == 8 and sorted(picked[0, :2]) == [6, 7]
  assert params["logits"].shape == (2, 3, 1)
  out = syn.materialize(params, static)["token_probs"]
  np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, rtol=1e-6)


def test_superposing_more_rows_than_a_class_has_names_the_setting_to_lower():
  shape = synthetic.SetShape(num_examples=2, seq_len=3, hidden=8, num_classes=2)
  ids = np.array([[101, 5, 102]] * 5 + [[101, 7, 102]] * 3, np.int32)
  split = data.Split(input_ids=ids, attention_mask=np.ones_like(ids), labels=np.array([0] * 5 + [1] * 3, np.int32),
                     texts=[""] * 8)
  with pytest.raises(UserError, match=r"synthetic.superpose=4 .* one class has 3; lower "
                                      r"--config.synthetic.superpose to at most 3"):
    synthetic.token_set(synthetic.Tokens(shape, 10.0), split, 1, 4, 0, 16)
  params, _ = synthetic.token_set(synthetic.Tokens(shape, 10.0), split, 1, 3, 0, 16)  # every row of class 1
  assert params["logits"].shape[:2] == (2, 3)
