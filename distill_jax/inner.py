"""The one inner loop: T optimizer steps as a `lax.scan`, differentiable end to end.

Distillation differentiates through it (w.r.t. the synthetic data and the
step sizes); evaluation, baselines and full-data training run it forward only.
Each step is `p ← p − lr_t · d_t`, where the direction `d_t` comes from a pure
optax transformation (momentum trace, Adam moments, decoupled weight decay).
Because optax is pure, an Adam inner loop unrolls and differentiates like SGD.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from distill_jax.errors import UserError

Params = Any
LossFn = Callable[[Params, Any], tuple[jax.Array, jax.Array]]

REMAT_POLICIES: dict[str, Optional[Callable]] = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def direction(kind: str, momentum: float = 0.9, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """The update direction of an inner optimizer; the step size is applied by `unroll`."""
  if kind == "sgd":
    tx = optax.trace(decay=momentum) if momentum else optax.identity()
  elif kind == "adam":
    # eps_root > 0 keeps d/dg sqrt(v) finite at g = 0, which matters when differentiating through.
    tx = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=1e-16)
  else:
    raise UserError(f"unknown inner optimizer {kind!r}; use 'sgd' or 'adam'")
  if weight_decay:
    tx = optax.chain(tx, optax.add_decayed_weights(weight_decay))
  return tx


def unroll(loss_fn: LossFn, params: Params, xs: Any, lrs: jax.Array,
           tx: optax.GradientTransformation, opt_state: Any = None, *,
           remat: bool = True, remat_policy: str = "nothing_saveable",
           scan_unroll: int = 1, cut: Optional[jax.Array] = None,
           lr_index: Optional[Params] = None) -> tuple[Params, Any, jax.Array]:
  """Runs `len(lrs)` steps; step t sees `xs[t]` and step size `lrs[t]`.

  `lrs` is [T], or [T, G] with `lr_index` (a params-shaped pytree of ints)
  naming each leaf's column: per-group step sizes.

  `loss_fn(params, x_t) -> (loss, aux)` builds its own batch from `x_t`
  (indices into a synthetic set, a real batch, a dropout key...), so one loop
  serves every data source. Returns final params, optimizer state and the
  per-step losses. `cut[t]` (bool, traced) stops the gradient through the carry
  entering step t: the meta-gradient then only sees steps after the last cut,
  wherever a random window put it.
  """
  chex.assert_rank(lrs, 1 if lr_index is None else 2)
  chex.assert_tree_shape_prefix(xs, (lrs.shape[0],))
  if opt_state is None:
    opt_state = tx.init(params)
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def step(carry, inp):
    p, s = carry
    x_t, lr_t, cut_t = inp
    if cut_t is not None:  # same values; gradient kept only where cut_t is False
      keep = 1.0 - cut_t.astype(lrs.dtype)
      p, s = jax.tree_util.tree_map(
          lambda a: a if not jnp.issubdtype(a.dtype, jnp.inexact)
          else jax.lax.stop_gradient(a) + keep.astype(a.dtype) * (a - jax.lax.stop_gradient(a)), (p, s))
    g, loss = grad_fn(p, x_t)
    d, s = tx.update(g, s, p)
    lr = jax.tree_util.tree_map(lambda _: lr_t, p) if lr_index is None else \
        jax.tree_util.tree_map(lambda i: lr_t[i], lr_index)
    p = jax.tree_util.tree_map(lambda a, b, c: a - (c * b).astype(a.dtype), p, d, lr)
    return (p, s), loss

  if remat:
    if remat_policy not in REMAT_POLICIES:
      raise UserError(f"unknown remat_policy {remat_policy!r}; use one of {sorted(REMAT_POLICIES)}")
    step = jax.checkpoint(step, policy=REMAT_POLICIES[remat_policy])
  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, lrs, cut),
                                             unroll=scan_unroll)
  return params, opt_state, losses
