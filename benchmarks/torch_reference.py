"""One outer step of distillation in PyTorch, written independently of the JAX engine.

It is the yardstick for `distill_jax`: the test suite checks that the JAX meta-loss
and meta-gradients equal these numbers, and `bench_outer.py` times the same math
in both frameworks. Nothing here imports jax, so a torch benchmark process holds
no JAX runtime.

The math (inner batch = the whole synthetic set, dropout off, hard labels):
θ0 given; synthetic input embeddings x [M, L, H] (the word-embedding table is
bypassed, so it gets no inner gradient); raw step sizes r [T], lr_t = softplus(r_t);
T steps of momentum SGD v ← βv + g, p ← p − lr_t·v (v0 = 0, as `optax.trace`);
outer loss = mean cross-entropy of θT on a real batch of token ids. The
meta-gradients dL/dx and dL/dr go back through all T steps
(`torch.autograd.grad(create_graph=True)`, no rematerialisation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch.func import functional_call

# With `inputs_embeds` the table is never read, so it is kept out of the inner loop.
FROZEN = ("bert.embeddings.word_embeddings.weight",)

Params = dict[str, torch.Tensor]


def build_model(config: Any, dtype: torch.dtype = torch.float32) -> transformers.BertForSequenceClassification:
  """HF BERT classifier in eval mode, dropout 0, eager attention.

  `config` is a mapping of HF config keys or anything with `to_dict()` (our
  `bert.BertConfig`, a `transformers.BertConfig`). Eager attention because the
  CPU SDPA kernel's backward has no derivative, so it cannot be differentiated twice.
  """
  d = dict(config) if isinstance(config, Mapping) else config.to_dict()
  d.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  hf_config = transformers.BertConfig(**d)
  hf_config._attn_implementation = "eager"
  model = transformers.BertForSequenceClassification(hf_config).to(dtype).eval()
  return model.requires_grad_(False)  # weights always come in through `functional_call`


def _tensor(a: Any, dtype: Optional[torch.dtype] = None, requires_grad: bool = False) -> torch.Tensor:
  """numpy / jax / torch array -> torch tensor; integer arrays become int64 (token ids, labels)."""
  t = a.detach().clone() if torch.is_tensor(a) else torch.as_tensor(np.array(a))
  t = t.to(dtype) if dtype is not None else t if t.is_floating_point() else t.long()
  return t.requires_grad_(requires_grad)


def params_from_state_dict(state_dict: Mapping[str, Any], dtype: torch.dtype) -> Params:
  """θ0 as leaf tensors that require grad (the inner loop differentiates w.r.t. them)."""
  return {k: _tensor(v, dtype, k not in FROZEN) for k, v in state_dict.items()}


def fresh_params(model: transformers.BertForSequenceClassification, generator: torch.Generator,
                 std: float = 0.02) -> Params:
  """A fresh random θ0 with HF's (and `bert.init_params`') rule: N(0, std) weights, zero biases, unit LayerNorm."""
  out = {}
  for name, p in model.named_parameters():
    if name.endswith("LayerNorm.weight"):
      t = torch.ones_like(p)
    elif name.endswith(".bias"):
      t = torch.zeros_like(p)
    else:
      t = torch.empty_like(p).normal_(0.0, std, generator=generator)
    out[name] = t.requires_grad_(name not in FROZEN)
  return out


def logits(model: transformers.BertForSequenceClassification, params: Params, **inputs: torch.Tensor) -> torch.Tensor:
  return functional_call(model, params, args=(), kwargs=inputs).logits


def soft_cross_entropy(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
  """Mean CE against probability targets, as `modeling.soft_cross_entropy`."""
  return -(targets * out.log_softmax(-1)).sum(-1).mean()


def unroll(model: transformers.BertForSequenceClassification, theta0: Params, x: torch.Tensor,
           mask: torch.Tensor, targets: torch.Tensor, lrs: torch.Tensor, momentum: float) -> Params:
  """θ0 → θT by T steps of momentum SGD on (x, targets), keeping the graph for the meta-gradient."""
  frozen = {k: v for k, v in theta0.items() if k in FROZEN}
  names = [k for k in theta0 if k not in FROZEN]
  p = [theta0[k] for k in names]
  v = [torch.zeros_like(a) for a in p]
  for t in range(lrs.shape[0]):
    loss = soft_cross_entropy(logits(model, {**dict(zip(names, p)), **frozen},
                                     inputs_embeds=x, attention_mask=mask), targets)
    g = torch.autograd.grad(loss, p, create_graph=True)
    v = [momentum * vi + gi for vi, gi in zip(v, g)]
    p = [pi - lrs[t] * vi for pi, vi in zip(p, v)]
  return {**dict(zip(names, p)), **frozen}


def meta_loss(model: transformers.BertForSequenceClassification, theta0: Params, x: torch.Tensor,
              mask: torch.Tensor, targets: torch.Tensor, raw_lrs: torch.Tensor, real_ids: torch.Tensor,
              real_mask: torch.Tensor, real_labels: torch.Tensor, momentum: float) -> torch.Tensor:
  """Cross-entropy of θT (trained on the synthetic set) on the real batch."""
  theta_t = unroll(model, theta0, x, mask, targets, F.softplus(raw_lrs), momentum)
  return F.cross_entropy(logits(model, theta_t, input_ids=real_ids, attention_mask=real_mask), real_labels)


def loss_and_grads(model: transformers.BertForSequenceClassification, theta0: Params, x: torch.Tensor,
                   mask: torch.Tensor, targets: torch.Tensor, raw_lrs: torch.Tensor, real_ids: torch.Tensor,
                   real_mask: torch.Tensor, real_labels: torch.Tensor, momentum: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
  """(loss, dL/dx, dL/dr) for leaf tensors `x`, `raw_lrs` that require grad. Shared by the test and the benchmark."""
  loss = meta_loss(model, theta0, x, mask, targets, raw_lrs, real_ids, real_mask, real_labels, momentum)
  dx, dr = torch.autograd.grad(loss, (x, raw_lrs))
  return loss.detach(), dx, dr


def outer_loss_and_grads(state_dict: Mapping[str, Any], config: Any, x: Any, mask: Any, targets: Any,
                         raw_lrs: Any, real_ids: Any, real_mask: Any, real_labels: Any,
                         momentum: float) -> tuple[float, np.ndarray, np.ndarray]:
  """(meta-loss, dL/dx, dL/dr) of one outer step from θ0 = `state_dict`.

  `state_dict` holds HF names and layouts (e.g. `hf.to_hf_state_dict(params)`);
  arrays may be numpy, jax or torch. Computes in the dtype of `x` (float32 or float64).
  """
  dtype = _tensor(x).dtype
  model = build_model(config, dtype)
  theta0 = params_from_state_dict(state_dict, dtype)
  xt, rt = _tensor(x, dtype, True), _tensor(raw_lrs, dtype, True)
  loss, dx, dr = loss_and_grads(model, theta0, xt, _tensor(mask), _tensor(targets, dtype), rt,
                                _tensor(real_ids), _tensor(real_mask), _tensor(real_labels), momentum)
  return float(loss), dx.numpy(), dr.numpy()
