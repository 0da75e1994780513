"""Which datasets exist and how their columns and splits are named.

Besides the registered datasets, any folder of split files is a dataset
(`get_spec("path/to/folder")`), so a new dataset needs no code change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from distill_jax.data.sources import (available_splits, label_ids,
                                      parse_split, split_file)
from distill_jax.errors import UserError

DATASET_JSON = "dataset.json"
_JSON_KEYS = ("label_names", "train_split", "eval_split", "text_field",
              "label_field")


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
  # Absolute path of a folder dataset (see `get_spec`); None for registered
  # datasets, which live under data_dir or on the hub.
  folder: str | None = None

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
        # Only the official test split exists locally; see docs/data.md.
        train_split="test[:6000]",
        eval_split="test[6000:]",
    ),
    "trec": DatasetSpec(
        name="trec",
        hf_id="trec",
        text_field="text",
        label_field="coarse_label",
        label_names=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
        train_split="train",
        # No validation split: tune on held-out training rows.
        eval_split="test",
    ),
}

_ALIASES = {"agnews": "ag_news", "sst-2": "sst2", "glue/sst2": "sst2"}


# Folder datasets seen in this process, by name: callers pass `spec.name`
# back to `load_split`, which must find the folder again.
_FOLDER_SPECS: dict[str, DatasetSpec] = {}


def get_spec(name: str) -> DatasetSpec:
  """Looks a dataset up by name or alias (case-insensitive), or reads a folder.

  A path to a folder of `<split>.{jsonl.gz,jsonl,csv,parquet}` files is a
  dataset too (see `_folder_spec`); later calls also find it by its `name`.
  """
  raw = name.strip()
  key = _ALIASES.get(raw.lower(), raw.lower()).replace("-", "_")
  if key in REGISTRY:
    return REGISTRY[key]
  if key in _FOLDER_SPECS:
    return _FOLDER_SPECS[key]
  path = Path(raw).expanduser()
  if path.is_dir():
    spec = _folder_spec(path.resolve())
    _FOLDER_SPECS[spec.name] = spec
    return spec
  known = ", ".join(sorted(REGISTRY))
  if path.exists() or "/" in raw or os.sep in raw or raw.startswith("~"):
    problem = "is not a folder" if path.exists() else "does not exist"
    raise UserError(
        f"dataset folder {path} {problem}; pass a folder holding"
        f" <split>.jsonl.gz files or one of {known}")
  aliases = ", ".join(f"{a}->{t}" for a, t in sorted(_ALIASES.items()))
  raise UserError(
      f"unknown dataset {name!r}; use one of {known} (aliases: {aliases}) or"
      " the path of a folder holding <split>.jsonl.gz files")


def _folder_spec(folder: Path) -> DatasetSpec:
  """A spec for a folder of split files; its `dataset.json` (if any) rules.

  Without label_names, the classes are "0".."K-1", K = 1 + the largest label
  id in the train split's file; the eval split is "validation" if that file
  exists, else "test".
  """
  splits = available_splits(folder)
  if not splits:
    raise UserError(
        f"dataset folder {folder} has no split files; add e.g. train.jsonl.gz"
        " and test.jsonl.gz (or .jsonl, .csv, .parquet) there")
  meta = _dataset_json(folder)
  train_split = meta.get("train_split", "train")
  label_field = meta.get("label_field", "label")
  label_names = meta.get("label_names") or _counted_label_names(
      folder, train_split, label_field, splits)
  return DatasetSpec(
      name=_folder_name(folder),
      hf_id="",  # Never loaded from the hub: data_dir is ignored.
      text_field=meta.get("text_field", "text"),
      label_field=label_field,
      label_names=tuple(label_names),
      train_split=train_split,
      eval_split=meta.get(
          "eval_split", "validation" if "validation" in splits else "test"),
      folder=str(folder),
  )


def _folder_name(folder: Path) -> str:
  """The basename for people, a hash of the path for uniqueness.

  Filesystem-safe (it names cache files), stable across runs, and lowercase
  with underscores only, so `get_spec` maps it to itself.
  """
  base = re.sub(r"[^a-z0-9_]+", "_", folder.name.lower()).strip("_")
  digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
  return f"{base or 'dataset'}_{digest}"


def _dataset_json(folder: Path) -> dict[str, Any]:
  """The folder's `dataset.json` ({} when absent), checked key by key."""
  path = folder / DATASET_JSON
  if not path.is_file():
    return {}
  try:
    meta = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(
        f"cannot read {path} ({type(e).__name__}: {e}); fix or delete it"
    ) from e
  if not isinstance(meta, dict):
    raise UserError(
        f"{path} holds a JSON {type(meta).__name__}, not an object; write e.g."
        ' {"label_names": ["negative", "positive"]}')
  for key, value in meta.items():
    if key == "label_names":
      ok = (isinstance(value, list) and len(value) >= 2 and
            all(isinstance(v, str) and v.strip() for v in value))
      want = "a list of 2 or more names, class 0's first"
    elif key in _JSON_KEYS:
      ok = isinstance(value, str) and bool(value.strip())
      want = "a non-empty string"
    else:
      raise UserError(
          f"{path}: unknown key {key!r}; use only {', '.join(_JSON_KEYS)}")
    if not ok:
      raise UserError(f"{path}: {key} is {value!r}; make it {want}")
    if key.endswith("_split"):
      try:
        parse_split(value)
      except UserError as e:
        raise UserError(f"{path}: {e}") from None
  return meta


def _counted_label_names(folder: Path, train_split: str, label_field: str,
                         splits: list[str]) -> list[str]:
  base = parse_split(train_split).base
  path = split_file(folder, base)
  fix = f"list label_names in {folder / DATASET_JSON}"
  if path is None:
    raise UserError(
        f"no {base!r} split in {folder} to count classes from (available:"
        f" {', '.join(splits)}); add {base}.jsonl.gz, set train_split or"
        f" {fix}")
  ids = label_ids(path, label_field)
  if max(ids, default=0) < 1:
    found = "only label 0" if ids else "no rows"
    raise UserError(
        f"{path} has {found}, but a classifier needs 2 or more classes; add"
        f" rows of the other classes or {fix}")
  return [str(i) for i in range(max(ids) + 1)]
