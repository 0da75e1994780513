"""The config's one gate: old key names, and every check that needs no data.

`validate` runs once per command, before any data is read or the workdir is
touched, so an impossible value costs seconds, not a tokenized dataset.
Keys renamed when the config was grouped (`inner_steps` → `inner.steps`, ...)
keep working for one release: on the command line, in config files and in the
configs saved inside older checkpoints.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Iterable

import ml_collections
from absl import logging

from distill_jax import coreset, data, inner
from distill_jax.errors import UserError
from distill_jax.models import bert, hf

# Old flat name → grouped name. Remove in 0.3.
ALIASES = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "vocab": "data.vocab",
    "cache_dir": "data.cache_dir",
    "train_split": "data.train_split",
    "eval_split": "data.eval_split",
    "max_len": "data.max_len",
    "train_limit": "data.train_limit",
    "eval_limit": "data.eval_limit",
    "n_per_class": "synthetic.n_per_class",
    "inner_steps": "inner.steps",
    "checkpoint": "evaluate.checkpoint",
}

MODES = ("train", "distill", "evaluate")


def rename_flags(argv: list[str]) -> list[str]:
  """`--config.inner_steps=30` → `--config.inner.steps=30`, with a one-line note per old name."""
  out = []
  for arg in argv:
    for old, new in ALIASES.items():
      flag = f"--config.{old}"
      if arg == flag or arg.startswith(flag + "="):
        print(f"note: --config.{old} is now --config.{new} (the old name goes in 0.3)", file=sys.stderr)
        arg = f"--config.{new}" + arg[len(flag):]
        break
    out.append(arg)
  return out


def upgrade(values: dict) -> dict:
  """A config dict with its old flat keys moved to their groups (saved configs, old config files)."""
  out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
  for old, new in ALIASES.items():
    if old in out and not isinstance(out[old], dict):
      group, key = new.split(".")
      out.setdefault(group, {})
      out[group].setdefault(key, out.pop(old))
  return out


def upgrade_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`upgrade` for a ConfigDict from a config file that still sets `c.inner_steps = ...`."""
  stale = [k for k in ALIASES if k in cfg and not isinstance(cfg[k], ml_collections.ConfigDict)]
  if not stale:
    return cfg
  logging.warning("config file sets %s: now %s (the old names go in 0.3)", ", ".join(stale),
                  ", ".join(ALIASES[k] for k in stale))
  out = cfg.copy_and_resolve_references()
  with out.unlocked():
    for old in stale:
      group, key = ALIASES[old].split(".")
      out[group][key] = out[old]
      del out[old]
  return out


def get(values: dict, dotted: str, default: Any = None) -> Any:
  """`values["a"]["b"]` for "a.b" in a plain dict, or `default`."""
  for part in dotted.split("."):
    if not isinstance(values, dict) or part not in values:
      return default
    values = values[part]
  return values


def _finite_positive(x: Any) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _one_of(value: Any, choices: Iterable[str]) -> bool:
  return value in tuple(choices)


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Every check that needs only the config, the dataset registry and the model's config.json."""
  d, m, s, i, o, t, e = cfg.data, cfg.model, cfg.synthetic, cfg.inner, cfg.outer, cfg.train, cfg.evaluate
  checks = [
      (_one_of(cfg.mode, MODES), "mode must be train, distill or evaluate"),
      (d.max_len >= 2, "data.max_len must be >= 2 ([CLS] and [SEP])"),
      (d.train_limit >= 0 and d.eval_limit >= 0, "data.train_limit and data.eval_limit must be >= 0 (0 = all rows)"),
      (d.holdout_rows >= 1, "data.holdout_rows must be >= 1 (training rows that every choice is made on)"),
      (s.n_per_class >= 1, "synthetic.n_per_class must be >= 1"),
      (i.steps >= 1, "inner.steps must be >= 1"),
      (_finite_positive(i.lr), "inner.lr must be a finite number > 0"),
      (0 <= i.momentum < 1, "inner.momentum must be in [0, 1)"),
      (_finite_positive(i.adam_eps), "inner.adam_eps must be a finite number > 0"),
      (_one_of(i.optimizer, ("sgd", "adam")), "inner.optimizer must be sgd or adam"),
      (_one_of(i.lr_param, ("softplus", "log")), "inner.lr_param must be softplus or log"),
      (_one_of(i.lr_groups, ("global", "layer")), "inner.lr_groups must be global or layer"),
      (i.batch_size >= 0, "inner.batch_size must be >= 0 (0 = the whole set each step)"),
      (i.scan_unroll >= 1, "inner.scan_unroll must be >= 1"),
      (i.remat_segment >= 0, "inner.remat_segment must be >= 0 (0 = checkpoint every step only)"),
      (i.remat_segment <= 1 or i.remat,
       "inner.remat_segment > 1 checkpoints segments of the remat'ed loop: add --config.inner.remat=True"),
      (i.backprop_steps >= 0, "inner.backprop_steps must be >= 0 (0 = through all steps)"),
      (not i.random_window or 0 < i.backprop_steps < i.steps,
       "inner.random_window needs 0 < inner.backprop_steps < inner.steps (the window length)"),
      (_one_of(i.remat_policy, inner.REMAT_POLICIES),
       f"inner.remat_policy must be one of {sorted(inner.REMAT_POLICIES)}"),
      (not (i.remat and i.remat_policy == inner.FORWARD_OVER_REVERSE and m.matmul_dtype == "bfloat16"),
       "model.matmul_dtype=bfloat16 (a custom-VJP matmul, which forward mode cannot differentiate) needs a "
       "reverse-over-reverse remat policy: add --config.inner.remat_policy=nothing_saveable"),
      (o.steps >= 0, "outer.steps must be >= 0"),
      (_finite_positive(o.lr), "outer.lr must be a finite number > 0"),
      (o.lr_lr >= 0 and math.isfinite(o.lr_lr), "outer.lr_lr must be a finite number >= 0"),
      (o.label_lr >= 0 and math.isfinite(o.label_lr), "outer.label_lr must be a finite number >= 0 (0 = outer.lr)"),
      (o.clip >= 0 and math.isfinite(o.clip), "outer.clip must be a finite number >= 0 (0 = off)"),
      (o.warmup_steps >= 0, "outer.warmup_steps must be >= 0"),
      (o.real_batch_size >= 1, "outer.real_batch_size must be >= 1"),
      (0 <= o.real_min_tokens <= d.max_len, "outer.real_min_tokens must be in [0, data.max_len] (0 = every row)"),
      (o.inits_per_step >= 1, "outer.inits_per_step must be >= 1"),
      (o.log_every >= 1, "outer.log_every must be >= 1"),
      (o.checkpoint_every >= 1, "outer.checkpoint_every must be >= 1"),
      (o.eval_every >= 0, "outer.eval_every must be >= 0 (0 = no periodic evaluation)"),
      (o.eval_seeds >= 1 and o.eval_rows >= 1, "outer.eval_seeds and outer.eval_rows must be >= 1"),
      (_one_of(t.optimizer, ("sgd", "adam")), "train.optimizer must be sgd or adam"),
      (_finite_positive(t.learning_rate), "train.learning_rate must be a finite number > 0"),
      (t.batch_size >= 1 and t.epochs >= 1, "train.batch_size and train.epochs must be >= 1"),
      (t.chunk_steps >= 1 and t.eval_batch_size >= 1, "train.chunk_steps and train.eval_batch_size must be >= 1"),
      (t.warmup_steps >= 0 and t.patience >= 0, "train.warmup_steps and train.patience must be >= 0"),
      (t.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
      (e.seeds >= 1, "evaluate.seeds must be >= 1"),
      (e.batch_size >= 1, "evaluate.batch_size must be >= 1"),
      (e.ceiling_batch_size >= 0, "evaluate.ceiling_batch_size must be >= 0 (0 = skip the ceiling)"),
      (all(_one_of(x, coreset.METHODS) for x in e.coresets) and len(set(e.coresets)) == len(e.coresets),
       f"evaluate.coresets must hold distinct methods of {coreset.METHODS}"),
      (e.coreset_pool >= 0, "evaluate.coreset_pool must be >= 0 (0 = every training row)"),
      (e.equal_storage_batch_size >= 1, "evaluate.equal_storage_batch_size must be >= 1"),
      (len(e.lr_grid) >= 1 and all(_finite_positive(x) for x in e.lr_grid),
       "evaluate.lr_grid must hold finite step sizes > 0"),
      (not (cfg.mode == "evaluate" and not e.checkpoint), "mode=evaluate needs --config.evaluate.checkpoint=DIR"),
      (0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)"),
      (_one_of(m.dtype, ("float32", "bfloat16", "float64")), "model.dtype must be float32, bfloat16 or float64"),
      (_one_of(m.matmul_dtype, ("model", "bfloat16")), "model.matmul_dtype must be 'model' or 'bfloat16'"),
      (_one_of(m.pooling, bert.POOLINGS), "model.pooling must be 'cls' or 'mean'"),
      (m.pretrained or _one_of(m.size, bert.PRESETS), f"model.size must be one of {sorted(bert.PRESETS)}"),
      (_one_of(cfg.init.kind, ("random", "pretrained", "fixed")), "init.kind must be random, pretrained or fixed"),
      (not (cfg.init.kind == "pretrained" and not m.pretrained),
       "init.kind='pretrained' needs --config.model.pretrained=PATH_OR_HUB_ID"),
      (_one_of(s.kind, ("direct", "addressable", "tokens")), "synthetic.kind must be direct, addressable or tokens"),
      (s.kind != "addressable" or s.num_bases >= 1,
       "synthetic.kind=addressable needs --config.synthetic.num_bases >= 1"),
      (_one_of(s.init, ("real", "random")), "synthetic.init must be real or random"),
      (s.kind != "tokens" or s.init == "real",
       "synthetic.kind='tokens' starts from real examples; use --config.synthetic.init=real"),
      (_one_of(s.label_mode, ("hard", "soft", "real")), "synthetic.label_mode must be hard, soft or real"),
      (s.vocab_size >= 1, "synthetic.vocab_size must be >= 1"),
      (s.token_logit_scale >= 0, "synthetic.token_logit_scale must be >= 0"),
      (s.superpose >= 1, "synthetic.superpose must be >= 1 (real examples per synthetic one)"),
      (s.superpose == 1 or s.kind == "tokens", "synthetic.superpose > 1 needs --config.synthetic.kind=tokens"),
      (0 <= s.candidates_per_position <= s.vocab_size,
       "synthetic.candidates_per_position must be in [0, synthetic.vocab_size] (0 = all candidates)"),
      (s.candidates_per_position == 0 or s.kind == "tokens",
       "synthetic.candidates_per_position > 0 needs --config.synthetic.kind=tokens"),
      (_one_of(s.candidate_choice, ("frequent", "distinctive")),
       "synthetic.candidate_choice must be frequent or distinctive"),
      (s.candidate_choice == "frequent" or s.candidates_per_position > 0,
       "synthetic.candidate_choice=distinctive picks a sparse set's candidates: add "
       "--config.synthetic.candidates_per_position=K"),
      (isinstance(i.attention_weight, (int, float)) and math.isfinite(i.attention_weight) and i.attention_weight >= 0,
       "inner.attention_weight must be a finite number >= 0"),
      (not s.attention_labels or s.kind in ("direct", "tokens"),
       "synthetic.attention_labels needs --config.synthetic.kind=direct or tokens (an addressable example mixes "
       "memories: no one real example to take a teacher's attention on)"),
      (not s.attention_labels or s.init == "real",
       "synthetic.attention_labels starts from a teacher's attention on real examples; use "
       "--config.synthetic.init=real"),
      (not s.attention_labels or s.superpose == 1,
       "synthetic.attention_labels needs --config.synthetic.superpose=1 (one real example per synthetic one)"),
      (not s.attention_teacher or s.attention_labels,
       "synthetic.attention_teacher needs --config.synthetic.attention_labels=True"),
      (not s.attention_teacher or os.path.isdir(s.attention_teacher),
       f"synthetic.attention_teacher={s.attention_teacher!r} is not a directory; pass the --workdir of a "
       "mode=train run"),
  ]
  for ok, msg in checks:
    if not ok:
      raise UserError(f"bad config: {msg}")
  if cfg.mode == "evaluate":
    return  # the dataset and model come from the checkpoint; evaluate checks them there
  spec = data.get_spec(d.dataset)
  positions = model_config(cfg, spec.num_classes).max_position_embeddings
  if d.max_len > positions:
    raise UserError(f"bad config: data.max_len={d.max_len} exceeds the model's {positions} position embeddings; "
                    f"lower --config.data.max_len")


def model_config(cfg: ml_collections.ConfigDict, num_classes: int):
  """The model's BertConfig from the preset or the checkpoint's config.json (no weights)."""
  if cfg.model.pretrained:
    return hf.read_config(cfg.model.pretrained, num_classes)
  return bert.preset(cfg.model.size, num_labels=num_classes)
