"""Shared fixtures: a tiny BERT and a tiny config running on the real data files; one XLA compilation cache."""

import os
import shutil
import tempfile

# The suite compiles the same tiny programs over and over: in-process tests rebuild their jitted functions,
# and the command-line tests start dozens of processes that each compile the same distillation (a tiny
# one takes 27 s cold and 9 s from the cache). One persistent cache for the session, shared with the
# subprocesses through the environment, removed at the end so every session starts cold and alike.
_XLA_CACHE = tempfile.mkdtemp(prefix="distill_jax_test_xla_cache_")
os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import pytest

from distill_jax import experiment
from distill_jax.models import bert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")


def pytest_unconfigure(config):
  shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture
def tiny_bert_config():
  return bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16, num_labels=2,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_cli_config(tmp_path, **overrides):
  """configs/paper.py:rotten_tomatoes shrunk to seconds: a few dozen real rows, T=3, 4 outer steps."""
  from configs import paper
  c = paper.get_config("rotten_tomatoes")
  c.data.cache_dir = str(tmp_path / "cache")
  c.data.max_len = 16
  c.data.train_limit = 64
  c.data.eval_limit = 32
  c.synthetic.n_per_class = 2
  c.inner.steps = 3
  c.outer.steps = 4
  c.outer.real_batch_size = 16
  c.outer.log_every = 1
  c.outer.checkpoint_every = 2
  c.train.epochs = 1
  c.train.batch_size = 16
  c.train.chunk_steps = 2
  c.evaluate.seeds = 2
  c.evaluate.lr_grid = (0.01, 0.1)
  c.data.holdout_rows = 16
  return experiment.with_overrides(c, overrides)


def f64(tree):
  return jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                tree)
