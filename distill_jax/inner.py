"""The one inner loop: T optimizer steps as a `lax.scan`, differentiable end to end.

Distillation differentiates through it (w.r.t. the synthetic data and the
step sizes); evaluation, baselines and full-data training run it forward only.
Each step is `p ← p − lr_t · d_t`, where the direction `d_t` comes from a pure
optax transformation (momentum trace, Adam moments, decoupled weight decay).
Because optax is pure, an Adam inner loop unrolls and differentiates like SGD.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.ad_checkpoint import checkpoint_name

from distill_jax.errors import UserError

Params = Any
LossFn = Callable[[Params, Any], jax.Array]

# The saved residuals of each `jax.checkpoint`ed inner step. All but one
# recompute the step in the backward pass and differentiate its gradient again
# (reverse-over-reverse). FORWARD_OVER_REVERSE saves the step's inputs and its
# gradient (one params-sized array more than nothing_saveable) and differentiates
# the step by linearising its gradient once (`_forward_over_reverse`).
FORWARD_OVER_REVERSE = "forward_over_reverse"
_GRAD_NAME = "inner_step_gradient"
REMAT_POLICIES: dict[str, Optional[Callable]] = {
    FORWARD_OVER_REVERSE: jax.checkpoint_policies.save_only_these_names(_GRAD_NAME),
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
           remat: bool = True, remat_policy: str = FORWARD_OVER_REVERSE,
           scan_unroll: int = 1, cut: Optional[jax.Array] = None,
           lr_index: Optional[Params] = None, segment: int = 0) -> tuple[Params, Any, jax.Array]:
  """Runs `len(lrs)` steps; step t sees `xs[t]` and step size `lrs[t]`.

  `lrs` is [T], or [T, G] with `lr_index` (a params-shaped pytree of ints)
  naming each leaf's column: per-group step sizes.

  `loss_fn(params, x_t) -> loss` builds its own batch from `x_t`
  (indices into a synthetic set, a real batch, a dropout key...), so one loop
  serves every data source. Returns final params, optimizer state and the
  per-step losses. `cut[t]` (bool, traced) stops the gradient through the carry
  entering step t: the meta-gradient then only sees steps after the last cut,
  wherever a random window put it.

  `segment=k > 1` (with remat) checkpoints segments of k steps as well: the
  backward pass keeps the carry only every k steps and replays one segment at
  a time, so its residuals are T/k carries plus one segment's per-step ones
  instead of T per-step ones (k ≈ √T minimises that), for one more forward
  pass of every step. The first T mod k steps run as a shorter segment.
  """
  chex.assert_rank(lrs, 1 if lr_index is None else 2)
  chex.assert_tree_shape_prefix(xs, (lrs.shape[0],))
  if opt_state is None:
    opt_state = tx.init(params)
  grad_fn = jax.value_and_grad(loss_fn)

  if remat and remat_policy not in REMAT_POLICIES:
    raise UserError(f"unknown remat_policy {remat_policy!r}; use one of {sorted(REMAT_POLICIES)}")
  forward_over_reverse = remat and remat_policy == FORWARD_OVER_REVERSE

  def update(p, s, lr, x_t):
    loss, g = grad_fn(p, x_t)
    return (*_apply(tx, g, s, p, lr), loss)

  def step(carry, inp):
    p, s = carry
    x_t, lr_t, cut_t = inp
    if cut_t is not None:  # same values; gradient kept only where cut_t is False
      keep = 1.0 - cut_t.astype(lrs.dtype)
      p, s = jax.tree_util.tree_map(
          lambda a: a if not _inexact(a)
          else jax.lax.stop_gradient(a) + keep.astype(a.dtype) * (a - jax.lax.stop_gradient(a)), (p, s))
    lr = jax.tree_util.tree_map(lambda _: lr_t, p) if lr_index is None else \
        jax.tree_util.tree_map(lambda i: lr_t[i], lr_index)
    if forward_over_reverse:
      p, s, loss = _forward_over_reverse(loss_fn, tx, p, s, lr, x_t)
    else:
      p, s, loss = update(p, s, lr, x_t)
    return (p, s), loss

  if remat:
    step = jax.checkpoint(step, policy=REMAT_POLICIES[remat_policy])
  scan = functools.partial(jax.lax.scan, step, unroll=scan_unroll)
  steps = lrs.shape[0]
  if not (remat and 1 < segment < steps):
    (params, opt_state), losses = scan((params, opt_state), (xs, lrs, cut))
    return params, opt_state, losses
  replay = jax.checkpoint(scan, policy=jax.checkpoint_policies.nothing_saveable)  # keeps a segment's input only
  head = steps % segment
  inputs = (xs, lrs, cut)
  carry, losses = (params, opt_state), []
  if head:  # the remainder first, as one segment of its own
    carry, first = replay(carry, jax.tree_util.tree_map(lambda a: a[:head], inputs))
    losses.append(first)
  tail = jax.tree_util.tree_map(lambda a: a[head:].reshape((-1, segment) + a.shape[1:]), inputs)
  carry, rest = jax.lax.scan(replay, carry, tail)
  losses.append(rest.reshape(-1))
  return (*carry, jnp.concatenate(losses))


def _apply(tx: optax.GradientTransformation, g: Params, s: Any, p: Params, lr: Params) -> tuple[Params, Any]:
  """(p − lr · d, new state), d the optimizer's direction for gradient g."""
  d, s = tx.update(g, s, p)
  return jax.tree_util.tree_map(lambda a, b, c: a - (c * b).astype(a.dtype), p, d, lr), s


def _inexact(a: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(a), jnp.inexact)


def _zero_cotangent(a: Any) -> Any:
  """The cotangent of a value nothing flows back to (float0 for ints and keys)."""
  if _inexact(a):
    return jnp.zeros_like(a)
  return np.zeros(jnp.shape(a), jax.dtypes.float0)


def _forward_over_reverse(loss_fn: LossFn, tx: optax.GradientTransformation, p: Params, s: Any,
                          lr: Params, x_t: Any) -> tuple[Params, Any, jax.Array]:
  """One inner step, `p − lr · tx(∇L(p, x_t))`, whose VJP takes a forward-over-reverse product.

  Why: with remat, reverse-over-reverse recomputes each step's gradient and
  then differentiates it again (benchmarks/hvp_forms.py: the jvp form is
  cheaper); here the backward pass linearises
  p ↦ ∇L once, at the recomputed primal, and applies it to the gradient's
  cotangent ḡ. By symmetry of the Hessian, that one JVP gives both H_pp ḡ (for
  p) and H_cp ḡ (for everything else L is differentiable in: the synthetic set
  that `loss_fn` closes over, soft labels, inexact parts of `x_t`).

  Residuals are the step's inputs and its gradient g. The backward pass needs g
  for the update's own VJP (the step-size gradient is −⟨p̄, d(g)⟩), and the
  linearisation's tangents need the recomputed activations but not g itself, so
  saving it (params-sized) leaves the weight-gradient matmuls of the
  recomputation dead: 11 matmul passes per dense layer and step instead of 12.
  The step's loss gets a cotangent only if an objective uses the inner losses
  (symbolic zeros tell); otherwise its gradient is not formed at all.
  """
  # Every value `loss_fn` closes over becomes an argument: the backward pass is
  # traced outside this step, where the step's own tracers no longer exist.
  closed = jax.make_jaxpr(loss_fn)(p, x_t)

  def loss_of(q, x, xd, c, cd):  # L(q, x_t, closure c) with the inexact leaves replaced by xd, cd
    x_flat, x_tree = jax.tree_util.tree_flatten(x)
    x_flat, c = _put(x_flat, xd), _put(c, cd)
    args = jax.tree_util.tree_leaves((q, jax.tree_util.tree_unflatten(x_tree, x_flat)))
    return jax.core.eval_jaxpr(closed.jaxpr, c, *args)[0]

  def grads(q, x, c, argnums):  # loss, ∇ over q (0), x's inexact leaves (2), c's inexact leaves (4)
    return jax.value_and_grad(loss_of, argnums)(q, x, _take(jax.tree_util.tree_leaves(x)), c, _take(c))

  upd = functools.partial(_apply, tx)

  def run(q, s, lr, x, c):  # (outputs, ∇_q L): the forward pass needs ∇_q only
    loss, g = grads(q, x, c, 0)
    g = checkpoint_name(g, _GRAD_NAME)  # kept by the policy: the backward pass never recomputes it
    return (*upd(g, s, q, lr), loss), g

  @jax.custom_vjp
  def core(q, s, lr, x, c):
    return run(q, s, lr, x, c)[0]

  def fwd(q, s, lr, x, c):
    args = jax.tree_util.tree_map(lambda a: a.value, (q, s, lr, x, c), is_leaf=_is_primal)
    out, g = run(*args)
    return out, (*args, g)

  def bwd(res, ct):
    q, s, lr, x, c, g = res
    q_ct, s_ct, loss_ct = ct
    q_ct, s_ct = jax.tree_util.tree_map(_instantiate, (q_ct, s_ct), is_leaf=_is_zero)
    (_, gx, gc), lin = jax.linearize(lambda r: grads(r, x, c, (0, 2, 4))[1], q)
    _, upd_vjp = jax.vjp(upd, g, s, q, lr)
    g_ct, s_bar, q_bar, lr_bar = upd_vjp((q_ct, s_ct))
    hq, hx, hc = lin(g_ct)  # (H_qq ḡ, H_xq ḡ, H_cq ḡ)
    if not _is_zero(loss_ct):  # the step's loss is differentiated too: add its gradient
      plus = lambda h, g: jax.tree_util.tree_map(lambda a, b: a + loss_ct * b, h, g)
      hq, hx, hc = plus(hq, g), plus(hx, gx), plus(hc, gc)
    q_bar = jax.tree_util.tree_map(jnp.add, q_bar, hq)
    x_flat, x_tree = jax.tree_util.tree_flatten(x)
    x_bar = jax.tree_util.tree_unflatten(x_tree, _put([_zero_cotangent(a) for a in x_flat], hx))
    return q_bar, s_bar, lr_bar, x_bar, _put([_zero_cotangent(a) for a in c], hc)

  core.defvjp(fwd, bwd, symbolic_zeros=True)
  return core(p, s, lr, x_t, list(closed.consts))


def _is_primal(a: Any) -> bool:
  return isinstance(a, jax.custom_derivatives.CustomVJPPrimal)


def _is_zero(a: Any) -> bool:
  return isinstance(a, jax.custom_derivatives.SymbolicZero)


def _instantiate(a: Any) -> Any:
  return jnp.zeros(a.shape, a.dtype) if _is_zero(a) else a


def _take(leaves: list) -> list:
  return [a for a in leaves if _inexact(a)]


def _put(leaves: list, inexact: list) -> list:
  """`leaves` with its inexact entries replaced, in order, by `inexact`."""
  it = iter(inexact)
  return [next(it) if _inexact(a) else a for a in leaves]
