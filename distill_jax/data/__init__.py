"""Text-classification data: registry, loading, tokenization and batching.

Everything downstream (distillation, evaluation) sees only fixed-shape int32
numpy arrays, so this package is the one place that knows about files, the
Hugging Face hub and tokenizers.

Data sources (user guide: docs/data.md):

* A folder dataset: `name` is the path of a folder of split files (see
  `get_spec`); `data_dir` is then ignored.
* Local files `<data_dir>/<dataset>/<split>.{jsonl.gz,jsonl,csv,parquet}`.
  JSON Lines records are `{"text": str, "label": int}` (the registry's
  `text_field`/`label_field` names are accepted too, e.g. `sentence` for
  sst2). `data_dir` defaults to `$DISTILL_JAX_DATA_DIR`, else
  `<repo_root>/../shared/data`.
* The HF hub, only when `data_dir == "hub"`, via `datasets.load_dataset`.

Splits may carry an HF-style slice: `test[:6000]`, `test[6000:]`,
`train[10:20]`, `train[-100:]`, `train[:10%]` (percent bounds round to the
closest row, as in `datasets`).

ag_news: only the official *test* split (7,600 rows) is available locally
(the 120k-row train.csv could not be obtained), so the registry trains on
`test[:6000]` and evaluates on the disjoint `test[6000:]` (1,600 rows).
Results on ag_news are therefore not comparable with papers that train on
the official train split.

Tokenized splits are cached as `.npz` files (written atomically) keyed by
everything that affects their content, so repeated runs skip tokenization.

Layout: `registry` (dataset specs), `sources` (locations, split strings,
reading rows), `tokenize` (tokenizers), `splits` (the `Split` type), `cache`
(the `.npz` files), `batching` (sampling and batches). This file ties them
together in `load_texts` and `load_split` and re-exports the public API.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from distill_jax.data.batching import (batch_iterator, length_batches,
                                       num_batches, sample_per_class,
                                       stacked_batches)
from distill_jax.data.cache import (cache_key, cache_path, read_cache,
                                    write_cache)
from distill_jax.data.registry import REGISTRY, DatasetSpec, get_spec
from distill_jax.data.sources import (CACHE_ENV, DATA_DIR_ENV, HUB, HUB_VOCAB,
                                      LOCAL_FORMATS, VOCAB_ENV, check_limit,
                                      default_cache_dir, default_data_dir,
                                      default_vocab, read_source,
                                      resolve_source)
from distill_jax.data.splits import Split, holdout
from distill_jax.data.tokenize import (get_tokenizer, resolve_vocab,
                                       tokenize_texts, vocab_size)
from distill_jax.errors import UserError


def load_texts(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
) -> tuple[list[str], np.ndarray]:
  """Reads (texts, int32 labels) of one split, validated row by row.

  Args:
    name: dataset name or alias (see `REGISTRY`), or a dataset folder.
    split: split name, optionally sliced, e.g. "test[:6000]".
    data_dir: folder with `<name>/<split>.<ext>`; None uses
      `default_data_dir()`; "hub" loads with `datasets.load_dataset`.
    limit: keep only the first `limit` rows of the (sliced) split.

  Returns:
    The texts, in file order, and their labels in [0, num_classes).
  """
  check_limit(limit)
  source = resolve_source(get_spec(name), split, data_dir)
  return read_source(source, limit)


def load_split(
    name: str,
    split: str,
    *,
    max_len: int,
    data_dir: str | os.PathLike[str] | None = None,
    vocab: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> Split:
  """Loads and tokenizes a split to [CLS] ... [SEP] + padding, `max_len` wide.

  Args:
    name: dataset name or alias, or a dataset folder.
    split: split name, optionally sliced ("test[6000:]").
    max_len: sequence length after truncation/padding (>= 2).
    data_dir: see `load_texts`.
    vocab: see `get_tokenizer`.
    cache_dir: where tokenized `.npz` files go; None uses
      `default_cache_dir()`.
    limit: keep only the first `limit` rows (file order, no shuffling).

  Returns:
    The tokenized split; reloaded from the cache when nothing changed and
    the cached arrays are valid (else rebuilt, with a warning).
  """
  if max_len < 2:
    raise UserError(
        f"max_len={max_len} leaves no room for [CLS] and [SEP]; use max_len"
        " >= 2 (e.g. 64)")
  check_limit(limit)
  spec = get_spec(name)
  source = resolve_source(spec, split, data_dir)
  vocab_key = resolve_vocab(vocab)
  key = cache_key(source, limit, max_len, vocab_key)
  cache_root = Path(cache_dir if cache_dir is not None
                    else default_cache_dir()).expanduser()
  path = cache_path(cache_root, source, key)
  cached = read_cache(path, key, num_classes=spec.num_classes,
                      vocab_size=vocab_size(vocab_key), max_len=max_len)
  if cached is not None:
    return cached
  texts, labels = read_source(source, limit)
  input_ids, attention_mask = tokenize_texts(get_tokenizer(vocab_key),
                                             texts, max_len)
  result = Split(input_ids=input_ids, attention_mask=attention_mask,
                 labels=labels, texts=texts)
  write_cache(path, key, result)
  return result


__all__ = [
    "CACHE_ENV", "DATA_DIR_ENV", "HUB", "HUB_VOCAB", "LOCAL_FORMATS",
    "REGISTRY", "VOCAB_ENV", "DatasetSpec", "Split", "batch_iterator",
    "default_cache_dir", "default_data_dir", "default_vocab", "get_spec",
    "get_tokenizer", "holdout", "length_batches", "load_split", "load_texts",
    "num_batches", "sample_per_class", "stacked_batches",
]
