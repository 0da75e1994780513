"""The JAX outer step equals an independent PyTorch one (HF BERT, autograd through the unroll).

`test_inner.py` checks the meta-gradient against finite differences of our own
forward pass; this checks the whole bilevel math (model, inner momentum SGD,
step-size parametrisation, outer loss) against `transformers`' BERT, so a
shared mistake in our model and our gradients cannot hide.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import fit, inner, modeling, synthetic
from distill_jax.models import bert, hf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from benchmarks import torch_reference  # noqa: E402  (needs torch)

M, L, T, B, C = 4, 8, 3, 8, 2
MOMENTUM = 0.9
CONFIG = bert.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=16, num_labels=C,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _problem(dtype) -> dict:
  """Fixed θ0, synthetic set, distinct per-step step sizes and a padded real batch."""
  rng = np.random.default_rng(0)
  model = bert.BertForSequenceClassification(CONFIG, dtype=dtype)
  theta0 = jax.tree_util.tree_map(lambda a: a.astype(dtype), bert.init_params(model, jax.random.PRNGKey(0)))
  lengths = rng.integers(3, L + 1, size=B)
  real_mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int32)
  return dict(
      model=model, theta0=theta0,
      x=jnp.asarray(0.5 * rng.normal(size=(M, L, CONFIG.hidden_size)), dtype),
      mask=jnp.ones((M, L), jnp.int32),
      targets=jax.nn.one_hot(jnp.arange(M) % C, C).astype(dtype),
      raw_lrs=jnp.asarray(np.log(np.expm1([0.05, 0.1, 0.2])), dtype),  # softplus⁻¹ of the step sizes
      real_ids=jnp.asarray(rng.integers(1, CONFIG.vocab_size, size=(B, L)) * real_mask, jnp.int32),
      real_mask=jnp.asarray(real_mask), real_labels=jnp.asarray(rng.integers(0, C, size=B), jnp.int32))


def _jax_loss_and_grads(p: dict) -> tuple[float, np.ndarray, np.ndarray]:
  """The project's own inner loop (whole set per step, remat on) and outer loss."""
  spec = fit.InnerSpec(steps=T, batch_size=0, tx=inner.direction("sgd", momentum=MOMENTUM),
                           lr_param="softplus", remat=True)
  real = dict(input_ids=p["real_ids"], attention_mask=p["real_mask"], labels=p["real_labels"])

  def meta(x, raw_lrs):
    data = dict(inputs_embeds=x, attention_mask=p["mask"], targets=p["targets"])
    theta_t, _ = fit.train_on_set(p["model"], p["theta0"], data, synthetic.step_sizes(raw_lrs, "softplus"),
                                      jax.random.PRNGKey(1), spec)
    return modeling.loss_and_accuracy(p["model"], theta_t, real)[0]

  loss, (dx, dr) = jax.jit(jax.value_and_grad(meta, argnums=(0, 1)))(p["x"], p["raw_lrs"])
  return float(loss), np.asarray(dx), np.asarray(dr)


def _torch_loss_and_grads(p: dict) -> tuple[float, np.ndarray, np.ndarray]:
  return torch_reference.outer_loss_and_grads(
      hf.to_hf_state_dict(p["theta0"]), CONFIG, p["x"], p["mask"], p["targets"], p["raw_lrs"],
      p["real_ids"], p["real_mask"], p["real_labels"], MOMENTUM)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
  """Max abs difference relative to the reference's largest entry (entries near 0 carry no scale of their own)."""
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("x64,tol", [(False, 1e-4), (True, 1e-10)])
def test_jax_outer_step_matches_torch(x64, tol):
  with jax.enable_x64(x64):
    p = _problem(jnp.float64 if x64 else jnp.float32)
    loss_j, dx_j, dr_j = _jax_loss_and_grads(p)
    loss_t, dx_t, dr_t = _torch_loss_and_grads(p)
  assert dx_t.dtype == (np.float64 if x64 else np.float32)
  assert dx_j.shape == dx_t.shape == (M, L, CONFIG.hidden_size) and dr_j.shape == dr_t.shape == (T,)
  # The problem is not degenerate: the step sizes matter and every step's matters differently.
  assert np.all(np.abs(dr_t) > 0) and len(set(np.round(dr_t, 8).tolist())) == T
  assert abs(loss_j - loss_t) <= tol * max(1.0, abs(loss_t)), (loss_j, loss_t)
  assert _rel_err(dx_j, dx_t) <= tol, _rel_err(dx_j, dx_t)
  assert _rel_err(dr_j, dr_t) <= tol, (dr_j, dr_t)
