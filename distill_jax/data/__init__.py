"""Text-classification data: registry, loading, tokenization and batching.

Everything downstream (distillation, evaluation) sees only fixed-shape int32
numpy arrays, so this module is the one place that knows about files, the
Hugging Face hub and tokenizers.

Data sources, in order of preference:

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
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill_jax.errors import UserError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "DISTILL_JAX_DATA_DIR"
VOCAB_ENV = "DISTILL_JAX_VOCAB"
CACHE_ENV = "DISTILL_JAX_CACHE"
HUB = "hub"
HUB_VOCAB = "bert-base-uncased"
LOCAL_FORMATS = (".jsonl.gz", ".jsonl", ".csv", ".parquet")

# Bump when the cache file layout or tokenization recipe changes.
_CACHE_VERSION = 1
_REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------
# Registry.


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Where a dataset lives and how its columns and splits are named."""

  name: str
  hf_id: str
  text_field: str
  label_field: str
  label_names: tuple[str, ...]
  hf_config: str | None = None
  train_split: str = "train"
  eval_split: str = "validation"

  @property
  def num_classes(self) -> int:
    return len(self.label_names)


REGISTRY: dict[str, DatasetSpec] = {
    "sst2": DatasetSpec(
        name="sst2",
        hf_id="glue",
        hf_config="sst2",
        text_field="sentence",
        label_field="label",
        label_names=("negative", "positive"),
        train_split="train",
        eval_split="validation",  # GLUE test labels are hidden.
    ),
    "rotten_tomatoes": DatasetSpec(
        name="rotten_tomatoes",
        hf_id="rotten_tomatoes",
        text_field="text",
        label_field="label",
        label_names=("neg", "pos"),
        train_split="train",
        eval_split="validation",
    ),
    "imdb": DatasetSpec(
        name="imdb",
        hf_id="imdb",
        text_field="text",
        label_field="label",
        label_names=("neg", "pos"),
        train_split="train",
        eval_split="test",  # imdb has no validation split.
    ),
    "ag_news": DatasetSpec(
        name="ag_news",
        hf_id="ag_news",
        text_field="text",
        label_field="label",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        # Only the official test split exists locally; see module docstring.
        train_split="test[:6000]",
        eval_split="test[6000:]",
    ),
}

_ALIASES = {"agnews": "ag_news", "sst-2": "sst2", "glue/sst2": "sst2"}


def get_spec(name: str) -> DatasetSpec:
  """Looks a dataset up by name or alias (case-insensitive)."""
  key = name.strip().lower()
  key = _ALIASES.get(key, key).replace("-", "_")
  if key not in REGISTRY:
    aliases = ", ".join(f"{a}->{t}" for a, t in sorted(_ALIASES.items()))
    raise UserError(
        f"unknown dataset {name!r}; use one of {', '.join(sorted(REGISTRY))}"
        f" (aliases: {aliases})")
  return REGISTRY[key]


# ----------------------------------------------------------------------------
# Default locations.


def _env(name: str) -> str | None:
  value = os.environ.get(name, "").strip()
  return value or None


def default_data_dir() -> str:
  """`$DISTILL_JAX_DATA_DIR`, else `<repo_root>/../shared/data`."""
  env = _env(DATA_DIR_ENV)
  if env is not None:
    return env if env == HUB else os.path.expanduser(env)
  return os.path.normpath(_REPO_ROOT.parent / "shared" / "data")


def default_vocab() -> str:
  """`$DISTILL_JAX_VOCAB`, else the shared uncased vocab, else the hub id."""
  env = _env(VOCAB_ENV)
  if env is not None:
    return os.path.expanduser(env)
  local = _REPO_ROOT.parent / "shared" / "models" / "bert-uncased-vocab"
  local = local / "vocab.txt"
  if local.is_file():
    return os.path.normpath(local)
  return HUB_VOCAB


def default_cache_dir() -> str:
  """`$DISTILL_JAX_CACHE`, else `~/.cache/distill_jax`."""
  env = _env(CACHE_ENV)
  return os.path.expanduser(env or "~/.cache/distill_jax")


# ----------------------------------------------------------------------------
# Split strings: "train", "test[:6000]", "train[10:20]", "train[:10%]".

_SPLIT_RE = re.compile(
    r"^\s*([A-Za-z0-9_.\-]+)\s*"
    r"(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


@dataclasses.dataclass(frozen=True)
class _SplitSel:
  """A parsed split string: base split name plus optional slice bounds."""

  base: str
  start: str | None
  stop: str | None

  @property
  def needs_total(self) -> bool:
    """Negative or percent bounds need the row count before selecting."""
    return any(b is not None and (b.startswith("-") or b.endswith("%"))
               for b in (self.start, self.stop))

  def resolve(self, total: int) -> tuple[int, int]:
    def bound(b: str | None) -> int | None:
      if b is None:
        return None
      if b.endswith("%"):
        return int(round(int(b[:-1]) * total / 100))
      return int(b)

    start, stop, _ = slice(bound(self.start), bound(self.stop)).indices(total)
    return start, max(start, stop)


def _parse_split(split: str) -> _SplitSel:
  m = _SPLIT_RE.match(split)
  if m is None:
    raise UserError(
        f"bad split {split!r}; write a split name with an optional slice,"
        " e.g. 'train', 'test[:6000]', 'test[6000:]' or 'train[:10%]'")
  return _SplitSel(m.group(1), m.group(2), m.group(3))


def _select(items: Iterator[Any], sel: _SplitSel,
            limit: int | None) -> list[Any]:
  """Applies the slice and `limit`, stopping early when the bounds allow."""
  try:
    if sel.needs_total:
      everything = list(items)
      start, stop = sel.resolve(len(everything))
      chosen = everything[start:stop]
    else:
      start = int(sel.start or 0)
      stop = None if sel.stop is None else int(sel.stop)
      chosen = []
      for i, item in enumerate(items):
        if stop is not None and i >= stop:
          break
        if limit is not None and len(chosen) >= limit:
          break
        if i >= start:
          chosen.append(item)
  finally:
    close = getattr(items, "close", None)
    if close is not None:
      close()
  return chosen if limit is None else chosen[:limit]


# ----------------------------------------------------------------------------
# Reading and validating rows.


def _check_limit(limit: int | None) -> None:
  if limit is not None and limit < 1:
    raise UserError(f"limit={limit} must be >= 1 (or None for all rows)")


def _candidates(field: str) -> tuple[str, ...]:
  # Local files use "text"/"label" (shared/data convention); the hub column
  # names (e.g. "sentence" for sst2) are accepted as well.
  generic = "label" if field == "label" else "text"
  return (field,) if field == generic else (field, generic)


def _as_text(value: Any, where: str) -> str:
  if not isinstance(value, str):
    raise UserError(
        f"{where}: text is {type(value).__name__} {value!r}, not a string;"
        " fix that row")
  if not value.strip():
    raise UserError(
        f"{where}: empty or whitespace-only text; remove that row or fill it in")
  return value


_INT_RE = re.compile(r"^\s*-?\d+\s*$")


def _as_label(value: Any, spec: DatasetSpec, where: str) -> int:
  names = ", ".join(f"{i}={n}" for i, n in enumerate(spec.label_names))
  if isinstance(value, (bool, np.bool_)):
    label = None
  elif isinstance(value, (int, np.integer)):
    label = int(value)
  elif isinstance(value, (float, np.floating)) and float(value).is_integer():
    label = int(value)
  elif isinstance(value, str) and _INT_RE.match(value):
    label = int(value)
  else:
    label = None
  if label is None:
    raise UserError(
        f"{where}: label {value!r} is not an integer class id; use {names}")
  if not 0 <= label < spec.num_classes:
    raise UserError(
        f"{where}: label {label} is outside [0, {spec.num_classes}) for"
        f" {spec.name}; use {names}")
  return label


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
  """Yields (line number, raw line); only '\\n' separates records."""
  opener = gzip.open if path.name.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", newline="\n") as f:
    for lineno, line in enumerate(f, start=1):
      if line.strip():
        yield lineno, line


def _read_jsonl(path: Path, spec: DatasetSpec, sel: _SplitSel,
                limit: int | None) -> tuple[list[str], list[int]]:
  try:
    rows = _select(_iter_jsonl(path), sel, limit)
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise UserError(
        f"cannot read {path} ({type(e).__name__}: {e}); re-create the file as"
        " UTF-8 (gzip) JSON Lines") from e
  text_keys = _candidates(spec.text_field)
  label_keys = _candidates(spec.label_field)
  texts, labels = [], []
  for lineno, line in rows:
    where = f"{path}:{lineno}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(
          f"{where}: malformed JSON ({e.msg} at column {e.colno}); fix or"
          " remove that line") from e
    if not isinstance(record, dict):
      raise UserError(
          f"{where}: malformed record (a JSON {type(record).__name__}, not an"
          ' object); write {"text": ..., "label": ...}')
    values = []
    for keys in (text_keys, label_keys):
      key = next((k for k in keys if k in record), None)
      if key is None:
        wanted = " or ".join(repr(k) for k in keys)
        raise UserError(
            f"{where}: missing field {wanted} (record has"
            f" {sorted(record)}); add it")
      values.append(record[key])
    texts.append(_as_text(values[0], where))
    labels.append(_as_label(values[1], spec, where))
  return texts, labels


def _read_table(path: Path, spec: DatasetSpec, sel: _SplitSel,
                limit: int | None) -> tuple[list[str], list[int]]:
  try:
    import pandas as pd  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(
        f"reading {path} needs pandas; pip install pandas (and pyarrow for"
        " parquet) or convert it to .jsonl.gz") from e
  try:
    if path.suffix == ".csv":
      # keep_default_na=False: a review saying "NA" must stay a string.
      frame = pd.read_csv(path, keep_default_na=False)
    else:
      frame = pd.read_parquet(path)
  except ImportError as e:
    raise UserError(
        f"reading {path} needs pyarrow; pip install pyarrow or convert it to"
        " .jsonl.gz") from e
  except (OSError, ValueError) as e:
    first = str(e).splitlines()[0] if str(e) else ""
    raise UserError(
        f"cannot read {path} ({type(e).__name__}: {first}); fix or re-create"
        " the file") from e
  columns = []
  for field in (spec.text_field, spec.label_field):
    keys = _candidates(field)
    key = next((k for k in keys if k in frame.columns), None)
    if key is None:
      wanted = " or ".join(repr(k) for k in keys)
      raise UserError(
          f"{path}: missing column {wanted} (columns are"
          f" {list(map(str, frame.columns))}); rename or add it")
    columns.append(frame[key].tolist())
  rows = _select(iter(enumerate(zip(*columns), start=1)), sel, limit)
  texts, labels = [], []
  for rowno, (text, label) in rows:
    where = f"{path} row {rowno}"
    texts.append(_as_text(text, where))
    labels.append(_as_label(label, spec, where))
  return texts, labels


def _read_hub(spec: DatasetSpec, split: str,
              limit: int | None) -> tuple[list[str], list[int]]:
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(
        "data_dir='hub' needs the `datasets` package; pip install datasets or"
        f" set {DATA_DIR_ENV} to local files") from e
  name = spec.hf_id + (f"/{spec.hf_config}" if spec.hf_config else "")
  try:
    ds = datasets.load_dataset(spec.hf_id, spec.hf_config, split=split)
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).splitlines() or [""])[0][:200]
    raise UserError(
        f"could not load {name} split {split!r} from the HF hub"
        f" ({type(e).__name__}: {first}); check network and split name, or set"
        f" {DATA_DIR_ENV} to local files") from e
  if limit is not None:
    ds = ds.select(range(min(limit, len(ds))))
  for field in (spec.text_field, spec.label_field):
    if field not in ds.column_names:
      raise UserError(
          f"hub dataset {name} has no column {field!r} (columns are"
          f" {ds.column_names}); fix text_field/label_field in the registry")
  texts, labels = [], []
  for i, (text, label) in enumerate(
      zip(ds[spec.text_field], ds[spec.label_field])):
    where = f"hub {name} {split} row {i}"
    texts.append(_as_text(text, where))
    labels.append(_as_label(label, spec, where))
  return texts, labels


@dataclasses.dataclass(frozen=True)
class _Source:
  """A resolved split: a local file (path set) or the hub (path None)."""

  spec: DatasetSpec
  split: str
  sel: _SplitSel
  path: Path | None

  def identity(self) -> str:
    """What the cache key needs to notice a changed source."""
    if self.path is None:
      return f"hub:{self.spec.hf_id}:{self.spec.hf_config}:{self.split}"
    st = self.path.stat()
    return f"file:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _available_splits(folder: Path) -> list[str]:
  found = set()
  for p in folder.iterdir():
    for ext in LOCAL_FORMATS:
      if p.is_file() and p.name.endswith(ext):
        found.add(p.name[:-len(ext)])
        break
  return sorted(found)


def _resolve_source(spec: DatasetSpec, split: str,
                    data_dir: str | os.PathLike[str] | None) -> _Source:
  """Finds the split's file (or the hub) and raises fixable errors early."""
  sel = _parse_split(split)
  data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
  if data_dir == HUB:
    return _Source(spec, split, sel, None)
  root = Path(data_dir).expanduser()
  if not root.is_dir():
    raise UserError(
        f"data dir {root} does not exist; set {DATA_DIR_ENV} (or the data_dir"
        " option) to the folder holding <dataset>/<split>.jsonl.gz, or use"
        f" data_dir={HUB!r}")
  folder = root / spec.name
  if not folder.is_dir():
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise UserError(
        f"no folder {folder} for dataset {spec.name} (data dir has:"
        f" {', '.join(present) or 'nothing'}); add"
        f" {spec.name}/<split>.jsonl.gz there or use data_dir={HUB!r}")
  for ext in LOCAL_FORMATS:
    path = folder / f"{sel.base}{ext}"
    if path.is_file():
      return _Source(spec, split, sel, path)
  splits = _available_splits(folder)
  raise UserError(
      f"split {sel.base!r} of {spec.name} not found in {folder} (available:"
      f" {', '.join(splits) or 'none'}); use one of those or add"
      f" {sel.base}.jsonl.gz")


def _read_source(source: _Source,
                 limit: int | None) -> tuple[list[str], np.ndarray]:
  spec, path = source.spec, source.path
  if path is None:
    texts, labels = _read_hub(spec, source.split, limit)
  elif path.name.endswith((".jsonl.gz", ".jsonl")):
    texts, labels = _read_jsonl(path, spec, source.sel, limit)
  else:
    texts, labels = _read_table(path, spec, source.sel, limit)
  if not texts:
    where = path if path is not None else "the HF hub"
    raise UserError(
        f"split {source.split!r} of {spec.name} selects no rows from {where};"
        " widen the slice")
  return texts, np.asarray(labels, dtype=np.int32)


def load_texts(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
) -> tuple[list[str], np.ndarray]:
  """Reads (texts, int32 labels) of one split, validated row by row.

  Args:
    name: dataset name or alias (see `REGISTRY`).
    split: split name, optionally sliced, e.g. "test[:6000]".
    data_dir: folder with `<name>/<split>.<ext>`; None uses
      `default_data_dir()`; "hub" loads with `datasets.load_dataset`.
    limit: keep only the first `limit` rows of the (sliced) split.

  Returns:
    The texts, in file order, and their labels in [0, num_classes).
  """
  _check_limit(limit)
  source = _resolve_source(get_spec(name), split, data_dir)
  return _read_source(source, limit)


# ----------------------------------------------------------------------------
# Tokenizer.

_TOKENIZERS: dict[str, Any] = {}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "vocab.txt")


def _resolve_vocab(vocab: str | os.PathLike[str] | None) -> str:
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


def _bert_from_vocab(path: Path) -> Any:
  import transformers  # pylint: disable=g-import-not-at-top
  tokens = path.read_text(encoding="utf-8").split("\n")
  if tokens and not tokens[-1]:
    tokens.pop()
  index = {}
  for i, tok in enumerate(tokens):
    index.setdefault(tok.rstrip("\r"), i)
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
  if path.is_file():
    return _bert_from_vocab(path)
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
    if (path / "vocab.txt").is_file():
      return _bert_from_vocab(path / "vocab.txt")
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
  key = _resolve_vocab(vocab)
  tokenizer = _TOKENIZERS.get(key)
  if tokenizer is None:
    tokenizer = _TOKENIZERS[key] = _build_tokenizer(key)
  return tokenizer


def _vocab_fingerprint(key: str) -> str:
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


def _tokenize(tokenizer: Any, texts: Sequence[str],
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


# ----------------------------------------------------------------------------
# Tokenized splits.


@dataclasses.dataclass
class Split:
  """A tokenized split: int32 arrays with one row per example."""

  input_ids: np.ndarray  # [N, L] int32, [CLS] ... [SEP] [PAD]...
  attention_mask: np.ndarray  # [N, L] int32, 1 on real tokens.
  labels: np.ndarray  # [N] int32.
  texts: list[str]

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
    """Rows at `indices` (ints or a boolean mask), in that order."""
    idx = np.asarray(indices)
    if idx.dtype == np.bool_:
      idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64).reshape(-1)
    return Split(
        input_ids=self.input_ids[idx],
        attention_mask=self.attention_mask[idx],
        labels=self.labels[idx],
        texts=[self.texts[i] for i in idx.tolist()],
    )


def _dist_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "none"


def _cache_key(source: _Source, limit: int | None, max_len: int,
               vocab_key: str) -> str:
  parts = {
      "version": _CACHE_VERSION,
      "dataset": source.spec.name,
      "split": source.split,
      "limit": limit,
      "max_len": max_len,
      "vocab": _vocab_fingerprint(vocab_key),
      "source": source.identity(),
      # The tokenizer implementation can change ids across releases.
      "tokenizers": _dist_version("tokenizers"),
      "transformers": _dist_version("transformers"),
  }
  blob = json.dumps(parts, sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()


def _cache_path(cache_dir: Path, source: _Source, key: str) -> Path:
  split = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.split).strip("_")
  return cache_dir / f"{source.spec.name}-{split}-{key[:24]}.npz"


def _read_cache(path: Path, key: str) -> Split | None:
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


def _write_cache(path: Path, key: str, split: Split) -> None:
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
    name: dataset name or alias.
    split: split name, optionally sliced ("test[6000:]").
    max_len: sequence length after truncation/padding (>= 2).
    data_dir: see `load_texts`.
    vocab: see `get_tokenizer`.
    cache_dir: where tokenized `.npz` files go; None uses
      `default_cache_dir()`.
    limit: keep only the first `limit` rows (file order, no shuffling).

  Returns:
    The tokenized split; reloaded from the cache when nothing changed.
  """
  if max_len < 2:
    raise UserError(
        f"max_len={max_len} leaves no room for [CLS] and [SEP]; use max_len"
        " >= 2 (e.g. 64)")
  _check_limit(limit)
  source = _resolve_source(get_spec(name), split, data_dir)
  vocab_key = _resolve_vocab(vocab)
  key = _cache_key(source, limit, max_len, vocab_key)
  cache_root = Path(cache_dir if cache_dir is not None
                    else default_cache_dir()).expanduser()
  path = _cache_path(cache_root, source, key)
  cached = _read_cache(path, key)
  if cached is not None:
    return cached
  texts, labels = _read_source(source, limit)
  input_ids, attention_mask = _tokenize(get_tokenizer(vocab_key), texts,
                                        max_len)
  result = Split(input_ids=input_ids, attention_mask=attention_mask,
                 labels=labels, texts=texts)
  _write_cache(path, key, result)
  return result


# ----------------------------------------------------------------------------
# Sampling and batching.


def sample_per_class(labels: np.ndarray, n_per_class: int, num_classes: int,
                     seed: int) -> np.ndarray:
  """Indices of `n_per_class` random examples per class, class 0's first.

  Used to initialise distilled data from real examples; deterministic in
  `seed`.
  """
  if n_per_class < 1:
    raise UserError(f"n_per_class={n_per_class} must be >= 1")
  labels = np.asarray(labels)
  counts = [int(np.sum(labels == c)) for c in range(num_classes)]
  for c, count in enumerate(counts):
    if count < n_per_class:
      fix = (f"lower n_per_class to at most {min(counts)}" if min(counts)
             else "load rows of every class")
      raise UserError(
          f"class {c} has only {count} examples but n_per_class={n_per_class};"
          f" {fix} (or load more rows)")
  rng = np.random.default_rng(_seed_words(seed))
  parts = [rng.choice(np.flatnonzero(labels == c), size=n_per_class,
                      replace=False) for c in range(num_classes)]
  return np.concatenate(parts).astype(np.int64)


def _seed_words(*values: int) -> list[int]:
  # SeedSequence rejects negative ints; map them into uint64 deterministically.
  return [int(v) % 2**64 for v in values]


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng(_seed_words(seed, epoch)).permutation(n)


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
  """How many batches one epoch over `n` examples yields."""
  return n // batch_size if drop_remainder else math.ceil(n / batch_size)


def _gather(split: Split, idx: np.ndarray) -> dict[str, np.ndarray]:
  return {
      "input_ids": split.input_ids[idx],
      "attention_mask": split.attention_mask[idx],
      "labels": split.labels[idx],
  }


def _check_batch_size(split: Split, batch_size: int,
                      drop_remainder: bool) -> None:
  if batch_size < 1:
    raise UserError(f"batch_size={batch_size} must be >= 1")
  if drop_remainder and len(split) < batch_size:
    raise UserError(
        f"batch_size={batch_size} exceeds the split's {len(split)} examples,"
        " so no full batch exists; lower batch_size or load more rows")


def batch_iterator(
    split: Split,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of batches; the order depends only on (seed, epoch).

  With `drop_remainder=False` the last batch is simply smaller.
  """
  _check_batch_size(split, batch_size, drop_remainder)
  order = _epoch_order(len(split), seed, epoch, shuffle)
  count = num_batches(len(split), batch_size, drop_remainder)

  def generate() -> Iterator[dict[str, np.ndarray]]:
    for b in range(count):
      yield _gather(split, order[b * batch_size:(b + 1) * batch_size])

  return generate()


def stacked_batches(split: Split, batch_size: int, steps: int, *,
                    seed: int) -> dict[str, np.ndarray]:
  """`steps` training batches stacked on a leading axis, for `lax.scan`.

  Batch i equals the i-th batch of `batch_iterator(split, batch_size,
  seed=seed, epoch=0, 1, ...)` chained over epochs (partial batches dropped).
  Arrays are [steps, batch_size, ...].
  """
  if steps < 1:
    raise UserError(f"steps={steps} must be >= 1")
  _check_batch_size(split, batch_size, drop_remainder=True)
  per_epoch = len(split) // batch_size
  epochs = math.ceil(steps / per_epoch)
  order = np.concatenate([
      _epoch_order(len(split), seed, e, True)[:per_epoch * batch_size]
      for e in range(epochs)
  ])
  return _gather(split, order[:steps * batch_size].reshape(steps, batch_size))


__all__ = [
    "CACHE_ENV", "DATA_DIR_ENV", "HUB", "REGISTRY", "VOCAB_ENV", "DatasetSpec",
    "Split", "batch_iterator", "default_cache_dir", "default_data_dir",
    "default_vocab", "get_spec", "get_tokenizer", "load_split", "load_texts",
    "num_batches", "sample_per_class", "stacked_batches",
]
