"""The `.npz` cache of tokenized splits, so repeated runs skip tokenization.

Files are written atomically and keyed by everything that affects their
content (dataset, split, limit, max_len, vocab, source file, tokenizer
versions), and checked on read, since a key says nothing about the arrays.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from distill_jax.data.sources import CACHE_ENV, Source
from distill_jax.data.splits import Split
from distill_jax.data.tokenize import vocab_fingerprint

log = logging.getLogger(__name__)

# Bump when the cache file layout or tokenization recipe changes.
_CACHE_VERSION = 1


def _dist_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "none"


def cache_key(source: Source, limit: int | None, max_len: int,
              vocab_key: str) -> str:
  parts = {
      "version": _CACHE_VERSION,
      "dataset": source.spec.name,
      "split": source.split,
      "limit": limit,
      "max_len": max_len,
      "vocab": vocab_fingerprint(vocab_key),
      "source": source.identity(),
      # The tokenizer implementation can change ids across releases.
      "tokenizers": _dist_version("tokenizers"),
      "transformers": _dist_version("transformers"),
  }
  blob = json.dumps(parts, sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()


def cache_path(cache_dir: Path, source: Source, key: str) -> Path:
  split = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.split).strip("_")
  return cache_dir / f"{source.spec.name}-{split}-{key[:24]}.npz"


def read_cache(path: Path, key: str, *, num_classes: int, vocab_size: int,
               max_len: int) -> Split | None:
  """The cached split, or None if absent, stale, unreadable or invalid.

  A file with the right key is still checked against what the key promises:
  an edited or damaged file would otherwise fail far from here, or not at all.
  """
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      if str(z["key"]) != key:
        return None
      blob = z["text_bytes"].tobytes()
      offsets = z["text_offsets"].tolist()
      texts = [blob[a:b].decode("utf-8", "surrogatepass")
               for a, b in zip(offsets[:-1], offsets[1:])]
      split = Split(
          input_ids=z["input_ids"],
          attention_mask=z["attention_mask"],
          labels=z["labels"],
          texts=texts,
      )
  except (OSError, ValueError, KeyError, EOFError, TypeError,
          zipfile.BadZipFile) as e:
    log.warning("ignoring unreadable cache file %s (%s)", path, e)
    return None
  problem = _problem(split, num_classes, vocab_size, max_len)
  if problem is not None:
    log.warning("rebuilding invalid cache file %s: %s", path, problem)
    return None
  return split


def _problem(split: Split, num_classes: int, vocab_size: int,
             max_len: int) -> str | None:
  """What makes `split` differ from a freshly tokenized one, or None."""
  arrays = {"input_ids": split.input_ids,
            "attention_mask": split.attention_mask, "labels": split.labels}
  for name, array in arrays.items():
    if array.dtype != np.int32:
      return f"{name} is {array.dtype}, not int32"
  n = split.labels.shape[0] if split.labels.ndim == 1 else -1
  if n < 1:
    return f"labels have shape {split.labels.shape}, not [N] with N >= 1"
  for name in ("input_ids", "attention_mask"):
    if arrays[name].shape != (n, max_len):
      return (f"{name} has shape {arrays[name].shape}, not [N, max_len] ="
              f" {(n, max_len)}")
  if len(split.texts) != n:
    return f"{len(split.texts)} texts for {n} rows"
  bounds = {"labels": num_classes, "input_ids": vocab_size,
            "attention_mask": 2}
  for name, bound in bounds.items():
    array = arrays[name]
    if array.min() < 0 or array.max() >= bound:
      return (f"{name} values span [{array.min()}, {array.max()}], outside"
              f" [0, {bound})")
  return None


def write_cache(path: Path, key: str, split: Split) -> None:
  """Atomic write (tmp + os.replace); failures only cost a re-tokenize."""
  encoded = [t.encode("utf-8", "surrogatepass") for t in split.texts]
  offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
  np.cumsum([len(b) for b in encoded], out=offsets[1:])
  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".",
                               suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      np.savez(
          f,
          key=np.array(key),
          input_ids=split.input_ids,
          attention_mask=split.attention_mask,
          labels=split.labels,
          text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8),
          text_offsets=offsets,
      )
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    log.warning("could not write cache file %s (%s); set %s to a writable"
                " folder to cache tokenized data", path, e, CACHE_ENV)
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.unlink(tmp)
