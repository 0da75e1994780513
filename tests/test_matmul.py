"""bf16-operand matmuls: low precision in every derivative order, float32 everywhere else."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import inner, modeling
from distill_jax.models import bert, matmul

BF16 = jnp.bfloat16


def _dots(jaxpr) -> list:
  """Every dot_general equation in a jaxpr and the jaxprs nested in it."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      out.append(eqn)
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          out += _dots(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          out += _dots(sub)
  return out


def _operands(a, b):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return jax.random.normal(k1, a), jax.random.normal(k2, b)


def test_forward_rounds_the_operands_and_accumulates_in_float32():
  a, b = _operands((5, 64), (64, 7))
  got = matmul.matmul(a, b, BF16)
  want = a.astype(BF16).astype(jnp.float32) @ b.astype(BF16).astype(jnp.float32)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(matmul.matmul(a, b), a @ b)  # dtype=None: the plain matmul


def test_second_derivatives_run_every_matmul_in_bf16_and_stay_close_to_float32():
  a, b = _operands((6, 8), (8, 5))

  def second(dtype):
    f = lambda a, b: jnp.sum(jnp.tanh(matmul.matmul(a, b, dtype)) ** 2)
    # Differentiating a gradient norm is a backward-of-backward, as the meta-gradient is.
    return jax.grad(lambda a, b: jnp.sum(jax.grad(f)(a, b) ** 2), argnums=(0, 1))

  dots = _dots(jax.make_jaxpr(second(BF16))(a, b).jaxpr)
  assert len(dots) >= 6  # forward, two transposes, and their transposes
  assert all(v.aval.dtype == BF16 for e in dots for v in e.invars), [[v.aval.dtype for v in e.invars] for e in dots]
  assert all(v.aval.dtype == jnp.float32 for e in dots for v in e.outvars)
  f32 = [v.aval.dtype for e in _dots(jax.make_jaxpr(second(None))(a, b).jaxpr) for v in e.invars]
  assert set(f32) == {jnp.dtype(jnp.float32)}
  for lo, hi in zip(second(BF16)(a, b), second(None)(a, b)):
    assert lo.dtype == jnp.float32
    np.testing.assert_allclose(lo, hi, rtol=5e-2, atol=5e-2 * float(jnp.abs(hi).max()))


def test_flax_dense_layers_take_the_low_precision_dot_general():
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 8))
  for layer in (nn.Dense(5), nn.DenseGeneral((2, 3)), nn.DenseGeneral(5, axis=(-2, -1))):
    params = layer.init(jax.random.PRNGKey(2), x)
    lo = layer.clone(dot_general=matmul.dot_general(BF16)).apply(params, x)
    hi = layer.apply(params, x)
    assert lo.dtype == jnp.float32 and lo.shape == hi.shape
    np.testing.assert_allclose(lo, hi, rtol=0, atol=3e-2 * float(jnp.abs(hi).max()))
  assert matmul.dot_general(None) is None


def test_contractions_other_than_dense_layers_are_refused():
  with pytest.raises(ValueError, match="2-D operands"):
    matmul.matmul(jnp.ones((2, 3, 4)), jnp.ones((4, 5)), BF16)
  with pytest.raises(ValueError, match="only dense-layer contractions"):
    matmul.dot_general(BF16)(jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5)), (((2,), (1,)), ((0,), (0,))))
  with pytest.raises(ValueError, match="only dense-layer contractions"):
    matmul.dot_general(BF16)(jnp.ones((4, 3)), jnp.ones((4, 5)), (((0,), (0,)), ((), ())))


def test_meta_gradient_through_the_inner_loop_agrees_with_float32(tiny_bert_config):
  """The distillation gradient (w.r.t. synthetic embeddings, through 3 SGD steps) in bf16 matmuls."""
  key = jax.random.PRNGKey(0)
  x = 0.5 * jax.random.normal(key, (4, 8, tiny_bert_config.hidden_size))
  real = dict(input_ids=jax.random.randint(key, (16, 8), 1, 50), attention_mask=jnp.ones((16, 8), jnp.int32),
              labels=jnp.arange(16) % 2)
  syn_labels = jnp.arange(4) % 2
  grads = {}
  for name, dtype in (("f32", None), ("bf16", BF16)):
    model = bert.BertForSequenceClassification(tiny_bert_config, matmul_dtype=dtype)
    theta0 = bert.init_params(model, jax.random.PRNGKey(3))

    def meta_loss(x):
      loss_fn = lambda p, _: (modeling.loss_and_accuracy(
          model, p, dict(inputs_embeds=x, attention_mask=jnp.ones((4, 8), jnp.int32), labels=syn_labels))[0])
      # Reverse-over-reverse: forward mode cannot differentiate the bf16 matmul's custom VJP.
      p, _, _ = inner.unroll(loss_fn, theta0, jnp.zeros(3), jnp.full(3, 0.5), inner.direction("sgd"),
                             remat_policy="nothing_saveable")
      return modeling.loss_and_accuracy(model, p, real)[0]

    grads[name] = np.ravel(jax.jit(jax.grad(meta_loss))(x))
  lo, hi = grads["bf16"], grads["f32"]
  assert np.linalg.norm(hi) > 0
  cosine = lo @ hi / (np.linalg.norm(lo) * np.linalg.norm(hi))
  assert cosine > 0.99, cosine
  assert np.linalg.norm(lo - hi) / np.linalg.norm(hi) < 0.1
