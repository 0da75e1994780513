"""Builds what every mode needs from a config: data splits, model, θ0 sampler."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import config, data, modeling
from distill_jax.models import bert


@dataclasses.dataclass
class Experiment:
  cfg: ml_collections.ConfigDict
  spec: data.DatasetSpec
  train: data.Split  # the rows every method learns from
  holdout: data.Split  # training rows held out from all learning: every choice is made on them
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
    key = config.ALIASES.get(key, key)
    node = out
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return out


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
  """Data, model and θ0 sampler of a config that `config.validate` accepted."""
  d = cfg.data
  spec = data.get_spec(d.dataset)
  kw = dict(max_len=d.max_len, data_dir=d.data_dir or None, vocab=d.vocab or None, cache_dir=d.cache_dir or None)
  train = _random_rows(data.load_split(d.dataset, d.train_split or spec.train_split, **kw), d.train_limit, cfg.seed)
  train, held = data.holdout(train, d.holdout_rows, cfg.seed)
  evals = _random_rows(data.load_split(d.dataset, d.eval_split or spec.eval_split, **kw), d.eval_limit, cfg.seed)
  pre_config, pretrained = load_pretrained(cfg, spec.num_classes)
  model = modeling.build_model(cfg, spec.num_classes, pre_config)
  init_fn = modeling.make_init_fn(model, cfg.init, pretrained)
  return Experiment(cfg, spec, train, held, evals, model, init_fn, pretrained)
