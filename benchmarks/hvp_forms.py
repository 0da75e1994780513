"""Cost of one inner step's second-order product, in the two forms a meta-gradient can take.

Why: with remat, the backward pass of the unrolled loop recomputes each inner
step and then differentiates its gradient (reverse-over-reverse). A custom VJP
could instead take a forward-over-reverse product (jvp of the gradient), which
folds the recompute into the tangent pass. This measures whether that form is
cheaper on this machine before anyone builds it.

  python benchmarks/hvp_forms.py [--m 20] [--len 64]

Prints ms per call (best of 10) for: the inner gradient; grad of <g(θ, S), v>
w.r.t. (θ, S) (reverse-over-reverse, primal included); jvp of (∇θL, ∇SL) in
direction (v, 0) (forward-over-reverse, primal included). BERT-Tiny shape.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distill_jax import modeling, runtime  # noqa: E402
from distill_jax.models import bert  # noqa: E402


def best_ms(f, *args, n: int = 10) -> float:
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
  return 1000 * min(times)


def main() -> None:
  runtime.configure()
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--m", type=int, default=20, help="synthetic examples")
  p.add_argument("--len", type=int, default=64, help="tokens per example")
  args = p.parse_args()
  model = bert.BertForSequenceClassification(bert.preset("tiny", hidden_dropout_prob=0.0,
                                                         attention_probs_dropout_prob=0.0))
  trainable, frozen = modeling.split_frozen(bert.init_params(model, jax.random.PRNGKey(0)), (modeling.WORD_EMBEDDINGS,))
  x = 0.02 * jax.random.normal(jax.random.PRNGKey(1), (args.m, args.len, model.config.hidden_size))
  batch = dict(attention_mask=jnp.ones((args.m, args.len), jnp.int32), labels=jnp.arange(args.m) % 2)

  def loss(p, x):
    return modeling.loss_and_accuracy(model, modeling.merge(p, frozen), dict(batch, inputs_embeds=x))[0]

  grad = jax.grad(loss)
  v = jax.tree_util.tree_map(lambda a: 0.01 * jnp.ones_like(a), trainable)
  inner = lambda p, x, v: sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(grad(p, x)),
                                                              jax.tree_util.tree_leaves(v)))
  rev_rev = jax.jit(jax.grad(inner, argnums=(0, 1)))
  fwd_rev = jax.jit(lambda p, x, v: jax.jvp(jax.grad(loss, argnums=(0, 1)), (p, x), (v, jnp.zeros_like(x))))
  print(f"M={args.m} L={args.len}: inner gradient {best_ms(jax.jit(grad), trainable, x):.1f} ms | "
        f"reverse-over-reverse {best_ms(rev_rev, trainable, x, v):.1f} ms | "
        f"forward-over-reverse {best_ms(fwd_rev, trainable, x, v):.1f} ms")


if __name__ == "__main__":
  main()
