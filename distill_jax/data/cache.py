"""The `.npz` cache of tokenized splits, so repeated runs skip tokenization.

Files are written atomically and keyed by everything that affects their
content (dataset, split, limit, max_len, vocab, source file, tokenizer
versions).
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


def read_cache(path: Path, key: str) -> Split | None:
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
      return Split(
          input_ids=z["input_ids"],
          attention_mask=z["attention_mask"],
          labels=z["labels"],
          texts=texts,
      )
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    log.warning("ignoring unreadable cache file %s (%s)", path, e)
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
