"""Attention labels (Maekawa et al. 2023): the KL term, the learned targets and their meta-gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import fit, inner, modeling, synthetic
from distill_jax.models import bert

M, L, T = 4, 6, 3
MASK = jnp.asarray((np.arange(L)[None] < np.array([L, 4, 3, L])[:, None]).astype(np.int32))


def _model(cfg):
  model = bert.BertForSequenceClassification(cfg)
  return model, bert.init_params(model, jax.random.PRNGKey(0))


def _batch(cfg, key=1):
  x = jax.random.normal(jax.random.PRNGKey(key), (M, L, cfg.hidden_size))
  return dict(inputs_embeds=x, attention_mask=MASK, targets=jax.nn.one_hot(jnp.arange(M) % 2, 2))


def test_kl_is_zero_on_the_students_own_attention_and_positive_otherwise(tiny_bert_config):
  model, params = _model(tiny_bert_config)
  batch = _batch(tiny_bert_config)
  logits, own = modeling.classify_with_attention(model, params, batch)
  assert own.shape == (M, 1, 2, L, L)
  assert float(modeling.attention_kl(own, own, MASK)) == 0.0
  ce = modeling.loss_and_accuracy(model, params, batch)[0]
  assert float(modeling.set_loss(model, params, dict(batch, attention=own), 5.0)) == pytest.approx(float(ce))
  assert float(modeling.set_loss(model, params, batch, 5.0)) == float(ce)  # no labels (real data): the CE alone
  other = synthetic.attention_targets(jax.random.normal(jax.random.PRNGKey(2), own.shape), MASK)
  kl = float(modeling.attention_kl(other, own, MASK))
  assert kl > 0
  np.testing.assert_allclose(modeling.set_loss(model, params, dict(batch, attention=other), 2.0), ce + 2 * kl,
                             rtol=1e-6)
  # Padded queries do not count: other targets there leave the KL unchanged.
  padded_query = (MASK == 0)[:, None, None, :, None]
  moved = jnp.where(padded_query, jnp.roll(other, 1, axis=-1), other)
  assert float(modeling.attention_kl(moved, own, MASK)) == pytest.approx(kl, rel=1e-6)


def test_learned_logits_read_as_distributions_over_real_keys():
  logits = 30.0 * jax.random.normal(jax.random.PRNGKey(0), (M, 2, 3, L, L))  # whatever Adam makes of them
  a = np.asarray(synthetic.attention_targets(logits, MASK))
  np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
  assert np.all(a >= 0) and np.all(a[np.broadcast_to((MASK == 0)[:, None, None, None, :], a.shape)] == 0)
  probs = synthetic.attention_targets(jax.random.normal(jax.random.PRNGKey(1), (M, 2, 3, L, L)), MASK)
  np.testing.assert_allclose(synthetic.attention_targets(synthetic.attention_logits(probs), MASK), probs, atol=1e-6)


def test_the_meta_gradient_reaches_the_attention_labels(tiny_bert_config):
  """Finite, non-zero, nothing on padding, and the same through the remat'ed unroll (forward-over-reverse
  steps) as without remat."""
  model, theta0 = _model(tiny_bert_config)
  set_batch = _batch(tiny_bert_config)
  z0 = synthetic.attention_logits(modeling.attention_of(model, bert.init_params(model, jax.random.PRNGKey(7)),
                                                        set_batch))  # another model's attention: KL > 0
  real = dict(input_ids=jax.random.randint(jax.random.PRNGKey(3), (8, L), 1, tiny_bert_config.vocab_size),
              attention_mask=jnp.ones((8, L), jnp.int32), labels=jnp.arange(8) % 2)

  def grads(remat):
    spec = fit.InnerSpec(steps=T, batch_size=2, tx=inner.direction("sgd"), lr_param="softplus", remat=remat)

    def meta(z, x):
      data = dict(set_batch, inputs_embeds=x, attention=synthetic.attention_targets(z, MASK))
      theta_t, _ = fit.train_on_set(model, theta0, data, jnp.full((T,), 0.5), jax.random.PRNGKey(1), spec)
      return modeling.loss_and_accuracy(model, theta_t, real)[0]
    return jax.jit(jax.grad(meta, argnums=(0, 1)))(z0, set_batch["inputs_embeds"])

  gz, gx = grads(remat=True)
  assert np.all(np.isfinite(gz)) and np.abs(np.asarray(gz)).max() > 1e-7
  assert np.all(np.asarray(gz)[np.broadcast_to((MASK == 0)[:, None, None, None, :], gz.shape)] == 0)
  ref_z, ref_x = grads(remat=False)
  np.testing.assert_allclose(gz, ref_z, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(gx, ref_x, rtol=1e-4, atol=1e-9)


def test_token_sets_carry_their_attention_labels_into_the_inner_loss(tiny_bert_config):
  model, theta0 = _model(tiny_bert_config)
  vocab = np.arange(1, 11, dtype=np.int32)
  ids = vocab[np.random.default_rng(0).integers(0, 10, (M, L))]
  syn = synthetic.Tokens(synthetic.SetShape(M, L, tiny_bert_config.hidden_size, 2))
  params, static = syn.init(ids, np.asarray(MASK), np.arange(M) % 2, vocab)
  plain = syn.materialize(params, static)
  other = synthetic.attention_targets(jax.random.normal(jax.random.PRNGKey(2), (M, 1, 2, L, L)), MASK)
  labelled = synthetic.WithAttention(syn).materialize(dict(params, attention=synthetic.attention_logits(other)),
                                                      static)
  assert set(labelled) == {*plain, "attention"}
  spec = fit.InnerSpec(steps=1, batch_size=0, tx=inner.direction("sgd"), lr_param="softplus", remat=False,
                       attention_weight=3.0)
  first = lambda d: float(fit.train_on_set(model, theta0, d, jnp.full((1,), 0.1), jax.random.PRNGKey(0), spec)[1][0])
  embeds = jnp.einsum("mlv,vh->mlh", plain["token_probs"], modeling.word_table(theta0)[vocab])
  kl = modeling.attention_kl(labelled["attention"], modeling.classify_with_attention(
      model, theta0, dict(inputs_embeds=embeds, attention_mask=MASK))[1], MASK)
  np.testing.assert_allclose(first(labelled), first(plain) + 3.0 * float(kl), rtol=1e-5)
