"""The inner loop: scan = Python unroll, remat changes nothing, gradients = finite differences."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import fit, inner, modeling, synthetic
from distill_jax.models import bert

M, L, T = 4, 6, 5


def _problem(cfg, dtype=jnp.float32, optimizer="sgd", lr=0.1):
  model = bert.BertForSequenceClassification(cfg, dtype=dtype)
  init_fn = lambda k: jax.tree_util.tree_map(lambda x: x.astype(dtype), bert.init_params(model, k))
  # Adam's first steps are sign-like (g/|g|): its eps keeps the map smooth enough for finite differences.
  tx = inner.direction(optimizer, momentum=0.9, eps=1e-3)
  spec = fit.InnerSpec(steps=T, batch_size=2, tx=tx,
                           lr_param="softplus", remat=True)
  key = jax.random.PRNGKey(3)
  data = dict(inputs_embeds=jax.random.normal(key, (M, L, cfg.hidden_size), dtype),
              attention_mask=jnp.ones((M, L), jnp.int32),
              targets=jax.nn.one_hot(jnp.array([0, 1, 0, 1]), 2).astype(dtype))
  real = dict(input_ids=jax.random.randint(key, (8, L), 0, cfg.vocab_size),
              attention_mask=jnp.ones((8, L), jnp.int32), labels=jnp.array([0, 1] * 4))
  lr_raw = synthetic.init_step_sizes(lr, T, "softplus").astype(dtype)
  return model, init_fn, spec, data, real, lr_raw


def _meta(model, init_fn, spec, real):
  def f(x, lr_raw):
    data = dict(inputs_embeds=x, attention_mask=jnp.ones(x.shape[:2], jnp.int32),
                targets=jax.nn.one_hot(jnp.array([0, 1, 0, 1]), 2).astype(x.dtype))
    theta, _ = fit.train_on_set(model, init_fn(jax.random.PRNGKey(0)), data,
                                    synthetic.step_sizes(lr_raw, "softplus"), jax.random.PRNGKey(1), spec)
    return modeling.loss_and_accuracy(model, theta, real)[0]
  return f


def test_scan_equals_python_unroll(tiny_bert_config):
  model, init_fn, spec, data, _, lr_raw = _problem(tiny_bert_config)
  lrs = synthetic.step_sizes(lr_raw, "softplus")
  theta0 = init_fn(jax.random.PRNGKey(0))
  scanned, losses = fit.train_on_set(model, theta0, data, lrs, jax.random.PRNGKey(1), spec)
  # The same steps written out by hand.
  trainable, frozen = modeling.split_frozen(theta0, (modeling.WORD_EMBEDDINGS,))
  idx = fit.minibatch_indices(jax.random.PRNGKey(1), T, M, 2)
  tx, state, p = spec.tx, spec.tx.init(trainable), trainable
  for t in range(T):
    batch = jax.tree_util.tree_map(lambda a: a[idx[t]], data)
    g = jax.grad(lambda q: modeling.loss_and_accuracy(model, modeling.merge(q, frozen), batch)[0])(p)
    d, state = tx.update(g, state, p)
    p = jax.tree_util.tree_map(lambda a, b: a - lrs[t] * b, p, d)
  expect = modeling.merge(p, frozen)
  for a, b in zip(jax.tree_util.tree_leaves(scanned), jax.tree_util.tree_leaves(expect)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert losses.shape == (T,)


# Adam divides by sqrt(v), which turns float32 reassociation noise into ~1e-5
# differences, so its remat check runs in float64 where only the policy can differ.
# The policies are SGD's to cover; Adam's case checks that its moments survive remat
# (one policy: each is a fresh compile, and they cost a minute of the suite).
@pytest.mark.parametrize("optimizer,x64,policies", [
    ("sgd", False, ("nothing_saveable", "dots_saveable", "forward_over_reverse")),
    ("adam", True, ("nothing_saveable",))])
def test_remat_does_not_change_gradients(tiny_bert_config, optimizer, x64, policies):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config, dtype, optimizer)
    grads = {}
    for policy in (*policies, None):
      s = fit.InnerSpec(**{**spec.__dict__, "remat": policy is not None,
                               "remat_policy": policy or "nothing_saveable"})
      grads[policy] = jax.grad(_meta(model, init_fn, s, real), argnums=(0, 1))(data["inputs_embeds"], lr_raw)
    for policy in policies:
      for a, b in zip(jax.tree_util.tree_leaves(grads[policy]), jax.tree_util.tree_leaves(grads[None])):
        assert np.all(np.isfinite(a)) and np.any(a != 0)
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("policy", ["forward_over_reverse", "nothing_saveable"])
def test_remat_segments_do_not_change_gradients(tiny_bert_config, policy):
  model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config)
  grads = {}
  for k in (0, 2, 5):  # T=5: per step; a 1-step remainder + two segments of 2; one segment of all steps
    s = fit.InnerSpec(**{**spec.__dict__, "remat_policy": policy, "remat_segment": k})
    grads[k] = jax.grad(_meta(model, init_fn, s, real), argnums=(0, 1))(data["inputs_embeds"], lr_raw)
  for k in (2, 5):
    for a, b in zip(jax.tree_util.tree_leaves(grads[k]), jax.tree_util.tree_leaves(grads[0])):
      np.testing.assert_allclose(a, b, atol=1e-6)


def test_remat_segments_keep_fewer_residuals_for_long_unrolls():
  """T = 64 steps of a 64×64 linear model: per-step remat keeps 64 steps' residuals, segments of 8
  keep 8 carries plus one segment's, so XLA's temporary buffers shrink."""
  x = jax.random.normal(jax.random.PRNGKey(0), (32, 64))
  loss_fn = lambda p, _: jnp.mean(jnp.tanh(x @ p) ** 2)
  steps = 64

  def temp_bytes(segment):
    def meta(w, lrs):
      p, _, _ = inner.unroll(loss_fn, w, None, lrs, inner.direction("sgd"), segment=segment)
      return jnp.sum(p ** 2)
    args = (jnp.eye(64), jnp.full((steps,), 0.1))
    return jax.jit(jax.grad(meta, argnums=(0, 1))).lower(*args).compile().memory_analysis().temp_size_in_bytes

  per_step, segmented = temp_bytes(0), temp_bytes(8)
  params_bytes = 64 * 64 * 4
  assert per_step >= steps * 2 * params_bytes  # each step keeps at least its weights and momentum
  assert segmented < per_step / 2, (segmented, per_step)


def test_forward_over_reverse_differentiates_the_inner_losses_too(tiny_bert_config):
  """The per-step losses usually get no cotangent, and the backward pass then skips their gradient;
  when an objective does use them, it must be added back."""
  model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config)

  def objective(s):
    def f(x, lr_raw):
      d = dict(data, inputs_embeds=x)
      theta, losses = fit.train_on_set(model, init_fn(jax.random.PRNGKey(0)), d,
                                           synthetic.step_sizes(lr_raw, "softplus"), jax.random.PRNGKey(1), s)
      return modeling.loss_and_accuracy(model, theta, real)[0] + 0.5 * jnp.sum(losses)
    return f

  with_losses = {}
  for policy in ("forward_over_reverse", None):
    s = fit.InnerSpec(**{**spec.__dict__, "remat": policy is not None,
                             "remat_policy": policy or "nothing_saveable"})
    with_losses[policy] = jax.grad(objective(s), argnums=(0, 1))(data["inputs_embeds"], lr_raw)
  without = jax.grad(_meta(model, init_fn, spec, real), argnums=(0, 1))(data["inputs_embeds"], lr_raw)
  for a, b, c in zip(*map(jax.tree_util.tree_leaves, (with_losses["forward_over_reverse"], with_losses[None],
                                                      without))):
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c, atol=1e-4)  # the losses' own gradient is really in there


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.003)])
def test_gradient_matches_finite_differences_float64(tiny_bert_config, optimizer, lr):
  with jax.enable_x64(True):
    model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config, jnp.float64, optimizer, lr)
    f = _meta(model, init_fn, spec, real)
    x = data["inputs_embeds"]
    gx, glr = jax.grad(f, argnums=(0, 1))(x, lr_raw)
    assert gx.dtype == jnp.float64
    rng = np.random.default_rng(0)
    for _ in range(2):
      vx, vl = rng.normal(size=x.shape), rng.normal(size=lr_raw.shape)
      eps = 1e-5
      fd = (f(x + eps * vx, lr_raw + eps * vl) - f(x - eps * vx, lr_raw - eps * vl)) / (2 * eps)
      ad = jnp.sum(gx * vx) + jnp.sum(glr * vl)
      assert abs(fd - ad) <= 1e-3 * abs(ad), (fd, ad)
    # Each component separately too: the step-size gradient alone.
    e = np.zeros(T); e[0] = 1.0
    fd = (f(x, lr_raw + 1e-5 * e) - f(x, lr_raw - 1e-5 * e)) / 2e-5
    assert abs(fd - glr[0]) <= 1e-3 * abs(glr[0]) + 1e-12


def test_frozen_word_embeddings_stay_out_of_the_carry(tiny_bert_config):
  model, init_fn, spec, data, _, lr_raw = _problem(tiny_bert_config)
  theta0 = init_fn(jax.random.PRNGKey(0))
  theta_t, _ = fit.train_on_set(model, theta0, data, synthetic.step_sizes(lr_raw, "softplus"),
                                    jax.random.PRNGKey(1), spec)
  table = modeling.WORD_EMBEDDINGS
  np.testing.assert_array_equal(theta_t[table[0]][table[1]][table[2]], theta0[table[0]][table[1]][table[2]])
  assert not np.allclose(theta_t["classifier"]["kernel"], theta0["classifier"]["kernel"])


def test_minibatch_indices_are_distinct_per_step():
  idx = fit.minibatch_indices(jax.random.PRNGKey(0), 7, 10, 4)
  assert idx.shape == (7, 4)
  for row in np.asarray(idx):
    assert len(set(row.tolist())) == 4
  full = fit.minibatch_indices(jax.random.PRNGKey(0), 3, 5, 0)
  np.testing.assert_array_equal(full, np.tile(np.arange(5), (3, 1)))


def _meta_with_key(model, init_fn, spec, real):
  """jit(x, lr_raw, key) -> meta-loss: `_meta` with the inner-loop key as an argument."""
  @jax.jit
  def f(x, lr_raw, key):
    data = dict(inputs_embeds=x, attention_mask=jnp.ones(x.shape[:2], jnp.int32),
                targets=jax.nn.one_hot(jnp.array([0, 1, 0, 1]), 2).astype(x.dtype))
    theta, _ = fit.train_on_set(model, init_fn(jax.random.PRNGKey(0)), data,
                                    synthetic.step_sizes(lr_raw, "softplus"), key, spec)
    return modeling.loss_and_accuracy(model, theta, real)[0]
  return f


def test_truncated_bptt_reaches_only_the_last_steps(tiny_bert_config):
  model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config)
  key, x = jax.random.PRNGKey(1), data["inputs_embeds"]
  full = _meta_with_key(model, init_fn, spec, real)
  trunc = _meta_with_key(model, init_fn, fit.InnerSpec(**{**spec.__dict__, "backprop_steps": 2}), real)
  np.testing.assert_allclose(trunc(x, lr_raw, key), full(x, lr_raw, key), rtol=1e-6)  # same forward
  glr = np.asarray(jax.jit(jax.grad(trunc, argnums=1))(x, lr_raw, key))
  assert np.all(glr[:T - 2] == 0) and np.all(glr[T - 2:] != 0), glr


def test_random_window_backpropagates_through_k_steps_ending_at_a_random_step(tiny_bert_config):
  model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config)
  window = _meta_with_key(model, init_fn, fit.InnerSpec(**{**spec.__dict__, "backprop_steps": 2,
                                                               "random_window": True}), real)
  full = _meta_with_key(model, init_fn, spec, real)
  grad = jax.jit(jax.grad(window, argnums=1))
  x, ends = data["inputs_embeds"], set()
  for seed in range(4):
    key = jax.random.PRNGKey(seed)
    glr = np.asarray(grad(x, lr_raw, key))
    live = np.flatnonzero(glr)
    assert len(live) == 2 and live[1] == live[0] + 1, glr  # exactly k consecutive steps
    end = int(live[1]) + 1
    ends.add(end)
    # Forward: θ after `end` steps, i.e. the full loop with zero step size from `end` on.
    stopped = lr_raw.at[end:].set(-1e4)  # softplus(-1e4) = 0
    np.testing.assert_allclose(window(x, lr_raw, key), full(x, stopped, key), rtol=1e-6)
  assert len(ends) >= 2, ends  # the window moves with the key


def test_per_group_step_sizes_equal_global_ones_when_their_columns_agree(tiny_bert_config):
  model, init_fn, spec, data, _, lr_raw = _problem(tiny_bert_config)
  theta0, key = init_fn(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
  groups = modeling.lr_groups(theta0, "layer")
  layers = tuple(f"layer_{i}" for i in range(tiny_bert_config.num_hidden_layers))
  assert groups == ("classifier", "embeddings", *layers, "pooler")
  lrs = synthetic.step_sizes(lr_raw, "softplus")
  one, _ = fit.train_on_set(model, theta0, data, lrs, key, spec)
  per, _ = fit.train_on_set(model, theta0, data, jnp.tile(lrs[:, None], (1, len(groups))), key, spec)
  for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(per)):
    np.testing.assert_array_equal(a, b)


def test_per_group_step_size_gradients_match_finite_differences_float64(tiny_bert_config):
  with jax.enable_x64(True):
    model, init_fn, spec, data, real, lr_raw = _problem(tiny_bert_config, jnp.float64)
    f = _meta(model, init_fn, spec, real)
    x = data["inputs_embeds"]
    groups = modeling.lr_groups(init_fn(jax.random.PRNGKey(0)), "layer")
    n = len(groups)
    raw = jnp.tile(lr_raw[:, None], (1, n)) + jnp.linspace(-0.5, 0.5, n * T).reshape(T, n)
    g = jax.grad(f, argnums=1)(x, raw)
    assert g.shape == (T, n) and np.all(np.asarray(g)[:T - 1] != 0)  # every group at every step but the last
    for t, name in ((0, "classifier"), (2, "layer_0"), (T - 2, "embeddings")):
      col = groups.index(name)
      e = np.zeros((T, n)); e[t, col] = 1e-5
      fd = (f(x, raw + e) - f(x, raw - e)) / 2e-5
      assert abs(fd - g[t, col]) <= 1e-3 * abs(g[t, col]) + 1e-12, (t, col, fd, g[t, col])


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_word_embeddings_holds_the_table_for_token_data(tiny_bert_config, freeze):
  # The frozen-table ceiling (scripts/diagnose.py --freeze_word_table) trains real token ids
  # the way synthetic embeddings train: everything moves except the word table.
  model, init_fn, spec, _, real, lr_raw = _problem(tiny_bert_config)
  spec = dataclasses.replace(spec, freeze_word_embeddings=freeze)
  data = dict(input_ids=real["input_ids"], attention_mask=real["attention_mask"],
              targets=jax.nn.one_hot(real["labels"], 2))
  theta0 = init_fn(jax.random.PRNGKey(0))
  theta_t, _ = fit.train_on_set(model, theta0, data, synthetic.step_sizes(lr_raw, "softplus"),
                                    jax.random.PRNGKey(1), spec)
  moved = {"/".join(map(str, k)): bool(np.any(np.asarray(a) != np.asarray(b))) for (k, a), b in zip(
      jax.tree_util.tree_leaves_with_path(theta_t), jax.tree_util.tree_leaves(theta0))}
  table = [k for k in moved if "word_embeddings" in k]
  assert len(table) == 1 and moved[table[0]] is (not freeze)
  assert all(v for k, v in moved.items() if k not in table)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_hot_token_distributions_train_like_their_token_ids(tiny_bert_config, optimizer):
  # A Tokens set embeds through θ's table and trains the candidate rows: with one-hot
  # distributions it is the real text, so θT equals training on the ids themselves.
  model, init_fn, spec, _, real, lr_raw = _problem(tiny_bert_config, optimizer=optimizer)
  ids = real["input_ids"][:4]
  vocab = jnp.unique(jnp.concatenate([ids.ravel(), jnp.array([1, 2, 3])]))  # extra rows that no text uses
  targets = jax.nn.one_hot(real["labels"][:4], 2)
  as_ids = dict(input_ids=ids, attention_mask=jnp.ones_like(ids), targets=targets)
  as_tokens = dict(token_probs=jax.nn.one_hot(jnp.searchsorted(vocab, ids), len(vocab)),
                   token_vocab=jnp.broadcast_to(vocab, (4, len(vocab))), attention_mask=jnp.ones_like(ids),
                   targets=targets)
  theta0, lrs = init_fn(jax.random.PRNGKey(0)), synthetic.step_sizes(lr_raw, "softplus")
  a, _ = fit.train_on_set(model, theta0, as_ids, lrs, jax.random.PRNGKey(1), spec)
  b, _ = fit.train_on_set(model, theta0, as_tokens, lrs, jax.random.PRNGKey(1), spec)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, atol=2e-6)
  table = lambda t: np.asarray(t["embeddings"]["word_embeddings"]["embedding"])
  assert not np.allclose(table(b)[np.asarray(ids)], table(theta0)[np.asarray(ids)])  # the text's rows trained
  # and the gradient reaches the distributions
  g = jax.grad(lambda pr: modeling.loss_and_accuracy(model, fit.train_on_set(
      model, theta0, {**as_tokens, "token_probs": pr}, lrs, jax.random.PRNGKey(1), spec)[0], real)[0])(
      as_tokens["token_probs"])
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).max()) > 0
