"""Where rows come from: default locations, split strings, local files, hub.

Rows are validated one by one as they are read, so a bad record fails with
its file and line instead of as a shape or index error much later.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill_jax.errors import UserError

if TYPE_CHECKING:
  from distill_jax.data.registry import DatasetSpec

DATA_DIR_ENV = "DISTILL_JAX_DATA_DIR"
VOCAB_ENV = "DISTILL_JAX_VOCAB"
CACHE_ENV = "DISTILL_JAX_CACHE"
HUB = "hub"
HUB_VOCAB = "bert-base-uncased"
LOCAL_FORMATS = (".jsonl.gz", ".jsonl", ".csv", ".parquet")

_REPO_ROOT = Path(__file__).resolve().parents[2]


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
class SplitSel:
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


def parse_split(split: str) -> SplitSel:
  m = _SPLIT_RE.match(split)
  if m is None:
    raise UserError(
        f"bad split {split!r}; write a split name with an optional slice,"
        " e.g. 'train', 'test[:6000]', 'test[6000:]' or 'train[:10%]'")
  return SplitSel(m.group(1), m.group(2), m.group(3))


def _select(items: Iterator[Any], sel: SplitSel,
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


def check_limit(limit: int | None) -> None:
  if limit is not None and limit < 1:
    raise UserError(f"limit={limit} must be >= 1 (or None for all rows)")


def _candidates(field: str, generic: str) -> tuple[str, ...]:
  # Local files use "text"/"label" (shared/data convention); the hub column
  # names (e.g. "sentence" for sst2, "coarse_label" for trec) are accepted as
  # well.
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


def _label_id(value: Any) -> int | None:
  """An integer class id as written in a file (int, 2.0 or "2"), else None."""
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)) and float(value).is_integer():
    return int(value)
  if isinstance(value, str) and _INT_RE.match(value):
    return int(value)
  return None


def _as_label(value: Any, spec: DatasetSpec, where: str) -> int:
  names = ", ".join(f"{i}={n}" for i, n in enumerate(spec.label_names))
  label = _label_id(value)
  if label is None:
    raise UserError(
        f"{where}: label {value!r} is not an integer class id; use {names}")
  if not 0 <= label < spec.num_classes:
    raise UserError(
        f"{where}: label {label} is outside [0, {spec.num_classes}) for"
        f" {spec.name}; use {names}")
  return label


# A row as read: where it is (for messages) and the values of the columns
# asked for.
_Row = tuple[str, list[Any]]


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
  """Yields (line number, raw line); only '\\n' separates records."""
  opener = gzip.open if path.name.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", newline="\n") as f:
    for lineno, line in enumerate(f, start=1):
      if line.strip():
        yield lineno, line


def _jsonl_rows(path: Path, columns: Sequence[tuple[str, ...]], sel: SplitSel,
                limit: int | None) -> list[_Row]:
  try:
    lines = _select(_iter_jsonl(path), sel, limit)
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise UserError(
        f"cannot read {path} ({type(e).__name__}: {e}); re-create the file as"
        " UTF-8 (gzip) JSON Lines") from e
  rows = []
  for lineno, line in lines:
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
    for keys in columns:
      key = next((k for k in keys if k in record), None)
      if key is None:
        wanted = " or ".join(repr(k) for k in keys)
        raise UserError(
            f"{where}: missing field {wanted} (record has"
            f" {sorted(record)}); add it")
      values.append(record[key])
    rows.append((where, values))
  return rows


def _table_rows(path: Path, columns: Sequence[tuple[str, ...]], sel: SplitSel,
                limit: int | None) -> list[_Row]:
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
  values = []
  for keys in columns:
    key = next((k for k in keys if k in frame.columns), None)
    if key is None:
      wanted = " or ".join(repr(k) for k in keys)
      raise UserError(
          f"{path}: missing column {wanted} (columns are"
          f" {list(map(str, frame.columns))}); rename or add it")
    values.append(frame[key].tolist())
  rows = _select(iter(enumerate(zip(*values), start=1)), sel, limit)
  return [(f"{path} row {rowno}", list(row)) for rowno, row in rows]


def _file_rows(path: Path, columns: Sequence[tuple[str, ...]], sel: SplitSel,
               limit: int | None) -> list[_Row]:
  """The selected rows of a local file; `columns` lists each column's names."""
  if path.name.endswith((".jsonl.gz", ".jsonl")):
    return _jsonl_rows(path, columns, sel, limit)
  return _table_rows(path, columns, sel, limit)


def _hub_rows(spec: DatasetSpec, split: str, limit: int | None) -> list[_Row]:
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
  return [(f"hub {name} {split} row {i}", [text, label])
          for i, (text, label) in enumerate(
              zip(ds[spec.text_field], ds[spec.label_field]))]


def label_ids(path: Path, label_field: str) -> list[int]:
  """Every label of a split file (texts are not checked), to count classes."""
  every_row = SplitSel("", None, None)
  rows = _file_rows(path, [_candidates(label_field, "label")], every_row, None)
  ids = []
  for where, (value,) in rows:
    label = _label_id(value)
    if label is None or label < 0:
      raise UserError(
          f"{where}: label {value!r} is not a class id (an integer >= 0); fix"
          " that row")
    ids.append(label)
  return ids


# ----------------------------------------------------------------------------
# Resolving a split to its file (or the hub).


@dataclasses.dataclass(frozen=True)
class Source:
  """A resolved split: a local file (path set) or the hub (path None)."""

  spec: DatasetSpec
  split: str
  sel: SplitSel
  path: Path | None

  def identity(self) -> str:
    """What the cache key needs to notice a changed source."""
    if self.path is None:
      return f"hub:{self.spec.hf_id}:{self.spec.hf_config}:{self.split}"
    st = self.path.stat()
    return f"file:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def available_splits(folder: Path) -> list[str]:
  found = set()
  for p in folder.iterdir():
    for ext in LOCAL_FORMATS:
      if p.is_file() and p.name.endswith(ext):
        found.add(p.name[:-len(ext)])
        break
  return sorted(found)


def split_file(folder: Path, base: str) -> Path | None:
  """The file of split `base` in `folder`, in `LOCAL_FORMATS` order."""
  for ext in LOCAL_FORMATS:
    path = folder / f"{base}{ext}"
    if path.is_file():
      return path
  return None


def _dataset_folder(spec: DatasetSpec,
                    data_dir: str | os.PathLike[str] | None) -> Path | None:
  """The folder holding the spec's split files; None means the hub."""
  if spec.folder is not None:
    return Path(spec.folder)  # A folder dataset names its files itself.
  data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
  if data_dir == HUB:
    return None
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
  return folder


def resolve_source(spec: DatasetSpec, split: str,
                   data_dir: str | os.PathLike[str] | None) -> Source:
  """Finds the split's file (or the hub) and raises fixable errors early."""
  sel = parse_split(split)
  folder = _dataset_folder(spec, data_dir)
  if folder is None:
    return Source(spec, split, sel, None)
  path = split_file(folder, sel.base)
  if path is None:
    splits = available_splits(folder)
    raise UserError(
        f"split {sel.base!r} of {spec.name} not found in {folder} (available:"
        f" {', '.join(splits) or 'none'}); use one of those or add"
        f" {sel.base}.jsonl.gz")
  return Source(spec, split, sel, path)


def read_source(source: Source,
                limit: int | None) -> tuple[list[str], np.ndarray]:
  spec, path = source.spec, source.path
  if path is None:
    rows = _hub_rows(spec, source.split, limit)
  else:
    columns = [_candidates(spec.text_field, "text"),
               _candidates(spec.label_field, "label")]
    rows = _file_rows(path, columns, source.sel, limit)
  texts, labels = [], []
  for where, (text, label) in rows:
    texts.append(_as_text(text, where))
    labels.append(_as_label(label, spec, where))
  if not texts:
    where = path if path is not None else "the HF hub"
    raise UserError(
        f"split {source.split!r} of {spec.name} selects no rows from {where};"
        " widen the slice")
  return texts, np.asarray(labels, dtype=np.int32)
