"""Tokenizers: where the vocab comes from, loading once, hashing, encoding."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill_jax.data.sources import HUB_VOCAB, VOCAB_ENV, default_vocab
from distill_jax.errors import UserError

_TOKENIZERS: dict[str, Any] = {}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "vocab.txt")


def resolve_vocab(vocab: str | os.PathLike[str] | None) -> str:
  """Absolute local path, or a hub id when nothing local matches."""
  value = default_vocab() if vocab is None else os.fspath(vocab)
  path = Path(value).expanduser()
  if path.exists():
    return str(path.resolve())
  if value.startswith(("/", ".", "~")) or value.endswith((".txt", ".json")):
    raise UserError(
        f"vocab {value} does not exist; set {VOCAB_ENV} (or the vocab option)"
        f" to a vocab.txt file or tokenizer folder, or to a hub id such as"
        f" {HUB_VOCAB!r}")
  return value


def _vocab_file(path: Path) -> Path | None:
  """The vocab.txt a tokenizer is built from; None for other tokenizers."""
  if path.is_file():
    return path
  if (path.is_dir() and (path / "vocab.txt").is_file() and
      not (path / "tokenizer.json").is_file() and
      not (path / "tokenizer_config.json").is_file()):
    return path / "vocab.txt"
  return None


def _vocab_tokens(path: Path) -> list[str]:
  tokens = path.read_text(encoding="utf-8").split("\n")
  if tokens and not tokens[-1]:
    tokens.pop()
  return [tok.rstrip("\r") for tok in tokens]


def _bert_from_vocab(path: Path) -> Any:
  import transformers  # pylint: disable=g-import-not-at-top
  index = {}
  for i, tok in enumerate(_vocab_tokens(path)):
    index.setdefault(tok, i)
  missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in index]
  if missing:
    raise UserError(
        f"vocab {path} lacks {', '.join(missing)}; use a BERT WordPiece"
        " vocab.txt")
  # The first parameter is `vocab_file` in transformers 4 but `vocab` in 5,
  # where a `vocab_file=` keyword is silently ignored (leaving a 5-token
  # vocab), so pass it positionally and verify the result.
  tokenizer = transformers.BertTokenizerFast(str(path), do_lower_case=True)
  if (len(tokenizer.get_vocab()) != len(index) or
      tokenizer.cls_token_id != index["[CLS]"]):
    raise RuntimeError(
        f"BertTokenizerFast did not load {path} (vocab size"
        f" {len(tokenizer.get_vocab())} != {len(index)}); transformers API"
        " changed?")
  return tokenizer


def _build_tokenizer(key: str) -> Any:
  import transformers  # pylint: disable=g-import-not-at-top
  path = Path(key)
  vocab_file = _vocab_file(path)
  if vocab_file is not None:
    return _bert_from_vocab(vocab_file)
  if path.is_dir():
    if ((path / "tokenizer.json").is_file() or
        (path / "tokenizer_config.json").is_file()):
      try:
        return transformers.AutoTokenizer.from_pretrained(
            key, local_files_only=True)
      except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise UserError(
            f"cannot load tokenizer folder {key} ({type(e).__name__}: {first});"
            " point the vocab option at a vocab.txt instead") from e
    raise UserError(
        f"tokenizer folder {key} has no vocab.txt or tokenizer.json; set"
        f" {VOCAB_ENV} to a vocab.txt file")
  try:
    return transformers.AutoTokenizer.from_pretrained(key)
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).splitlines() or [""])[0][:200]
    raise UserError(
        f"could not load tokenizer {key!r} from the HF hub"
        f" ({type(e).__name__}: {first}); set {VOCAB_ENV} to a local"
        " vocab.txt") from e


def get_tokenizer(vocab: str | os.PathLike[str] | None = None) -> Any:
  """A BERT tokenizer for a vocab.txt, a tokenizer folder or a hub id.

  None uses `default_vocab()`. Tokenizers are cached per resolved location,
  so repeated calls are free.
  """
  key = resolve_vocab(vocab)
  tokenizer = _TOKENIZERS.get(key)
  if tokenizer is None:
    tokenizer = _TOKENIZERS[key] = _build_tokenizer(key)
  return tokenizer


def vocab_size(key: str) -> int:
  """The bound on token ids, to check cached arrays against.

  A vocab.txt is counted rather than loaded, so a cache hit stays cheap.
  """
  vocab_file = _vocab_file(Path(key))
  if vocab_file is not None:
    return len(_vocab_tokens(vocab_file))
  return len(get_tokenizer(key))


def vocab_fingerprint(key: str) -> str:
  """Content hash of local tokenizer files (hub ids are taken verbatim)."""
  path = Path(key)
  if path.is_file():
    return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
  if path.is_dir():
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
      if (path / name).is_file():
        h.update(name.encode() + b"\0" + (path / name).read_bytes() + b"\0")
    return "dir:" + h.hexdigest()
  return "hub:" + key


def tokenize_texts(tokenizer: Any, texts: Sequence[str],
                   max_len: int) -> tuple[np.ndarray, np.ndarray]:
  ids, mask = [], []
  for i in range(0, len(texts), 8192):
    # Rust tokenizers reject lone surrogates (possible from JSON escapes).
    chunk = [t.encode("utf-8", "replace").decode("utf-8")
             for t in texts[i:i + 8192]]
    enc = tokenizer(chunk, max_length=max_len, truncation=True,
                    padding="max_length", return_attention_mask=True,
                    return_token_type_ids=False, return_tensors="np")
    ids.append(np.asarray(enc["input_ids"], dtype=np.int32))
    mask.append(np.asarray(enc["attention_mask"], dtype=np.int32))
  return np.concatenate(ids), np.concatenate(mask)
