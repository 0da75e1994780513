"""Builds what every mode needs from a config: data splits, model, θ0 sampler."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import data, inner, modeling
from distill_jax.errors import UserError
from distill_jax.models import bert


@dataclasses.dataclass
class Experiment:
  cfg: ml_collections.ConfigDict
  spec: data.DatasetSpec
  train: data.Split
  eval: data.Split
  model: bert.BertForSequenceClassification
  init_fn: Callable[[jax.Array], modeling.Params]
  pretrained: Optional[modeling.Params]

  @property
  def num_classes(self) -> int:
    return self.spec.num_classes

  def device_split(self, split: data.Split) -> dict:
    return dict(input_ids=jnp.asarray(split.input_ids), attention_mask=jnp.asarray(split.attention_mask),
                labels=jnp.asarray(split.labels))


def with_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `cfg` with dotted keys set ({"inner.lr": 0.1}), as `--config.inner.lr=0.1` would."""
  out = cfg.copy_and_resolve_references()
  for key, value in overrides.items():
    node = out
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return out


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Impossible values fail here, before any data is read."""
  checks = [
      (cfg.mode in ("train", "distill", "evaluate"), "mode must be train, distill or evaluate"),
      (cfg.max_len >= 2, "max_len must be >= 2"),
      (cfg.n_per_class >= 1, "n_per_class must be >= 1"),
      (cfg.inner_steps >= 1, "inner_steps must be >= 1"),
      (cfg.inner.lr > 0, "inner.lr must be > 0"),
      (cfg.inner.lr_groups in ("global", "layer"), "inner.lr_groups must be global or layer"),
      (cfg.inner.remat_segment >= 0, "inner.remat_segment must be >= 0 (0 = checkpoint every step only)"),
      (cfg.inner.remat_segment <= 1 or cfg.inner.remat,
       "inner.remat_segment > 1 checkpoints segments of the remat'ed loop: add --config.inner.remat=True"),
      (cfg.inner.backprop_steps >= 0, "inner.backprop_steps must be >= 0 (0 = through all steps)"),
      (not cfg.inner.random_window or 0 < cfg.inner.backprop_steps < cfg.inner_steps,
       "inner.random_window needs 0 < inner.backprop_steps < inner_steps (the window length)"),
      (cfg.outer.steps >= 0, "outer.steps must be >= 0"),
      (cfg.outer.lr > 0 and cfg.outer.lr_lr >= 0, "outer.lr must be > 0 and outer.lr_lr >= 0"),
      (cfg.outer.real_batch_size >= 1, "outer.real_batch_size must be >= 1"),
      (cfg.outer.inits_per_step >= 1, "outer.inits_per_step must be >= 1"),
      (cfg.outer.checkpoint_every >= 1, "outer.checkpoint_every must be >= 1"),
      (cfg.train.batch_size >= 1 and cfg.train.epochs >= 1, "train.batch_size and train.epochs must be >= 1"),
      (cfg.evaluate.seeds >= 1, "evaluate.seeds must be >= 1"),
      (0.0 <= cfg.model.dropout < 1.0, "model.dropout must be in [0, 1)"),
      (cfg.model.dtype in ("float32", "bfloat16", "float64"), "model.dtype must be float32, bfloat16 or float64"),
      (cfg.model.matmul_dtype in ("model", "bfloat16"), "model.matmul_dtype must be 'model' or 'bfloat16'"),
      (cfg.inner.remat_policy in inner.REMAT_POLICIES,
       f"inner.remat_policy must be one of {sorted(inner.REMAT_POLICIES)}"),
      (not (cfg.inner.remat and cfg.inner.remat_policy == inner.FORWARD_OVER_REVERSE
            and cfg.model.matmul_dtype == "bfloat16"),
       "model.matmul_dtype=bfloat16 (a custom-VJP matmul, which forward mode cannot differentiate) needs a "
       "reverse-over-reverse remat policy: add --config.inner.remat_policy=nothing_saveable"),
      (cfg.model.pooling in bert.POOLINGS, "model.pooling must be 'cls' or 'mean'"),
      (cfg.synthetic.token_logit_scale >= 0, "synthetic.token_logit_scale must be >= 0"),
      (cfg.synthetic.superpose >= 1, "synthetic.superpose must be >= 1 (real examples per synthetic one)"),
      (cfg.synthetic.superpose == 1 or cfg.synthetic.kind == "tokens",
       "synthetic.superpose > 1 needs --config.synthetic.kind=tokens"),
      (0 <= cfg.synthetic.candidates_per_position <= cfg.synthetic.vocab_size,
       "synthetic.candidates_per_position must be in [0, synthetic.vocab_size] (0 = all candidates)"),
      (cfg.synthetic.candidates_per_position == 0 or cfg.synthetic.kind == "tokens",
       "synthetic.candidates_per_position > 0 needs --config.synthetic.kind=tokens"),
      (not (cfg.init.kind == "pretrained" and not cfg.model.pretrained),
       "init.kind='pretrained' needs --config.model.pretrained=PATH_OR_HUB_ID"),
      (not (cfg.mode == "evaluate" and not cfg.checkpoint), "mode=evaluate needs --config.checkpoint=DIR"),
  ]
  for ok, msg in checks:
    if not ok:
      raise UserError(f"bad config: {msg}")


def load_pretrained(cfg: ml_collections.ConfigDict, num_classes: int):
  if not cfg.model.pretrained:
    return None, None
  from distill_jax.models import hf
  config, params, _ = hf.from_pretrained(cfg.model.pretrained, num_classes, rng=jax.random.PRNGKey(cfg.seed))
  return config, params


def _random_rows(split: data.Split, limit: int, seed: int) -> data.Split:
  """`limit` rows drawn at random (files can be sorted by label, so a prefix could be one class)."""
  if not limit or limit >= len(split):
    return split
  return split.subset(np.sort(np.random.default_rng(seed).choice(len(split), limit, replace=False)))


def setup(cfg: ml_collections.ConfigDict) -> Experiment:
  validate(cfg)
  spec = data.get_spec(cfg.dataset)
  kw = dict(max_len=cfg.max_len, data_dir=cfg.data_dir or None, vocab=cfg.vocab or None,
            cache_dir=cfg.cache_dir or None)
  train = _random_rows(data.load_split(spec.name, cfg.train_split or spec.train_split, **kw), cfg.train_limit, cfg.seed)
  evals = _random_rows(data.load_split(spec.name, cfg.eval_split or spec.eval_split, **kw), cfg.eval_limit, cfg.seed)
  pre_config, pretrained = load_pretrained(cfg, spec.num_classes)
  model = modeling.build_model(cfg, spec.num_classes, pre_config)
  init_fn = modeling.make_init_fn(model, cfg.init, pretrained)
  return Experiment(cfg, spec, train, evals, model, init_fn, pretrained)
