"""Train a fresh PyTorch BERT on a distilled set, with the recipe it was distilled for.

    python examples/train_torch_on_distilled.py --set RUN/export [--steps N]

The set (`distill_jax.export.save_set`) holds the synthetic inputs, their soft
labels and one learned learning rate per inner step ([T], or [T, G] for one per
module group). Training replays distillation's inner loop: step t feeds the
inputs (embeddings as `inputs_embeds`; token distributions through the model's
own word table), takes the soft-label cross-entropy and applies the config's
inner optimizer (momentum SGD, or Adam) with learning rate lr[t]. A set with
attention labels adds λ·KL(labels ‖ the model's attention), as the inner loss
does (`distill_jax.modeling.attention_kl`). Dropout is off, as in the inner
loop. Needs torch and transformers; distill_jax itself never imports torch.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
import transformers

import distill_jax
from distill_jax.errors import UserError

# BERT-Tiny (Turc et al. 2019), the default `model.size`; used when the set has no `model_config`.
BERT_TINY = dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512)


def build_model(distilled: dict) -> transformers.BertForSequenceClassification:
  """A model drawn as distill_jax draws θ0 (`init.kind`): fresh (HF's init is the same N(0, 0.02) rule),
  or the `model.pretrained` checkpoint's body with a fresh classifier."""
  config, num_labels = distilled["config"], len(distilled["label_names"])
  settings = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  if "attention" in distilled:  # the KL needs attention probabilities, which only eager attention returns
    settings.update(attn_implementation="eager", output_attentions=True)
  if config.get("init", {}).get("kind") == "pretrained":
    model = transformers.BertForSequenceClassification.from_pretrained(
        config["model"]["pretrained"], num_labels=num_labels, **settings)
    torch.nn.init.normal_(model.classifier.weight, std=model.config.initializer_range)
    torch.nn.init.zeros_(model.classifier.bias)
    return model
  shape = distilled["model_config"] or BERT_TINY
  return transformers.BertForSequenceClassification(
      transformers.BertConfig(**{**shape, "num_labels": num_labels, **settings}))


def group_of(name: str) -> str:
  """The distill_jax module group of an HF parameter (`modeling.lr_groups(..., "layer")`)."""
  parts = name.split(".")
  if parts[0] == "classifier":
    return "classifier"
  return f"layer_{parts[3]}" if parts[1] == "encoder" else parts[1]  # embeddings, pooler


def optimizer(model: torch.nn.Module, inner: dict, num_groups: int) -> torch.optim.Optimizer:
  """The inner optimizer with one parameter group per step-size column, in distill_jax's (sorted) order."""
  named = list(model.named_parameters())
  names = sorted({group_of(n) for n, _ in named}) if num_groups > 1 else [None]
  if len(names) != num_groups:
    raise UserError(f"the set has {num_groups} step-size groups but the model has {len(names)} modules; "
                    "export the set with its model_config")
  groups = [{"params": [p for n, p in named if name is None or group_of(n) == name]} for name in names]
  if inner.get("optimizer", "sgd") == "adam":
    return torch.optim.Adam(groups, lr=0.0, eps=inner.get("adam_eps", 1e-8))
  return torch.optim.SGD(groups, lr=0.0, momentum=inner.get("momentum", 0.9))


def logits(model: transformers.BertForSequenceClassification, embeds: torch.Tensor, mask: torch.Tensor,
           pooling: str) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
  """BERT's [CLS] pooler, or the masked mean of the final states (`model.pooling="mean"`) through it;
  and each layer's attention probabilities when the model returns them (`output_attentions`)."""
  out = model.bert(inputs_embeds=embeds, attention_mask=mask)
  if pooling == "cls":
    pooled = out.pooler_output
  else:
    m = mask[..., None].to(out.last_hidden_state.dtype)
    mean = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)
    pooled = torch.tanh(model.bert.pooler.dense(mean))
  return model.classifier(pooled), out.attentions or ()


def attention_kl(targets: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """KL(targets ‖ attention) over the keys, averaged over examples, layers, heads and real queries."""
  log = lambda p: p.clamp(min=1e-12).log()  # distill_jax.modeling.ATTENTION_FLOOR
  kl = torch.where(mask[:, None, None, None, :] > 0, targets * (log(targets) - log(attention)), 0.0).sum(-1)
  return kl[(mask[:, None, None, :] > 0).expand_as(kl)].mean()


def train(set_path: str, steps: Optional[int] = None, seed: int = 0,
          model: Optional[transformers.BertForSequenceClassification] = None) -> list[float]:
  """Trains `model` (default: a fresh one) on the set; returns the loss before each step and after the last."""
  distilled = distill_jax.load_distilled(set_path)
  config = distilled["config"]
  inner, pooling = config.get("inner", {}), config.get("model", {}).get("pooling", "cls")
  torch.manual_seed(seed)
  model = model if model is not None else build_model(distilled)
  lrs = torch.as_tensor(distilled["step_sizes"]).reshape(len(distilled["step_sizes"]), -1)[:steps]
  opt = optimizer(model, inner, lrs.shape[1])
  targets = torch.as_tensor(distilled["targets"])
  mask = torch.as_tensor(distilled["attention_mask"]).long()
  m, batch = len(targets), inner.get("batch_size", 0)

  def loss_on(idx: torch.Tensor) -> torch.Tensor:
    if "token_probs" in distilled:  # distributions over candidate tokens, embedded by the trained table
      table = model.bert.embeddings.word_embeddings.weight[torch.as_tensor(distilled["token_vocab"][0]).long()]
      embeds = torch.as_tensor(distilled["token_probs"])[idx] @ table
    else:
      embeds = torch.as_tensor(distilled["inputs_embeds"])[idx]
    out, attentions = logits(model, embeds, mask[idx], pooling)
    loss = -(targets[idx] * out.log_softmax(-1)).sum(-1).mean()
    if "attention" in distilled:
      labels = torch.as_tensor(distilled["attention"])[idx]
      loss = loss + inner.get("attention_weight", 1.0) * attention_kl(labels, torch.stack(attentions, 1), mask[idx])
    return loss

  losses = []
  for lr in lrs:
    idx = torch.randperm(m)[:batch] if 0 < batch < m else torch.arange(m)  # inner.batch_size: a minibatch per step
    for group, lr_g in zip(opt.param_groups, lr.tolist()):
      group["lr"] = lr_g
    opt.zero_grad()
    loss = loss_on(idx)
    loss.backward()
    opt.step()
    losses.append(loss.item())
  with torch.no_grad():
    losses.append(loss_on(torch.arange(m)).item())
  return losses


def main(argv: Optional[Sequence[str]] = None) -> list[float]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--set", required=True, help="export directory (or its set.safetensors)")
  parser.add_argument("--steps", type=int, default=None, help="train for the first N steps (default: all T)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  try:
    losses = train(args.set, args.steps, args.seed)
  except UserError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"trained {len(losses) - 1} steps: training loss {losses[0]:.4f} -> {losses[-1]:.4f}")
  return losses


if __name__ == "__main__":
  main()
