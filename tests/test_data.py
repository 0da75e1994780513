"""Tests for distill_jax.data on the real shared files plus tiny tmp files."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from distill_jax import data
from distill_jax.errors import UserError

REAL_DIR = Path(data.default_data_dir())
REAL_VOCAB = data.default_vocab()

requires_data = pytest.mark.skipif(
    not REAL_DIR.is_dir(),
    reason=f"real data dir {REAL_DIR} is absent (set {data.DATA_DIR_ENV})")
requires_vocab = pytest.mark.skipif(
    not os.path.isfile(REAL_VOCAB),
    reason=f"local vocab.txt not found (got {REAL_VOCAB!r}; set"
    f" {data.VOCAB_ENV})")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  """Keeps tests out of ~/.cache."""
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))


def _manifest() -> dict:
  return json.loads((REAL_DIR / "manifest.json").read_text())


def _write_jsonl(path: Path, lines: list[str]) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  payload = "".join(line + "\n" for line in lines)
  if path.name.endswith(".gz"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(payload)
  else:
    path.write_text(payload, encoding="utf-8")
  return path


def _rec(text: str, label) -> str:
  return json.dumps({"text": text, "label": label})


def _one_line_error(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


def _synthetic_split(n: int, length: int = 4, num_classes: int = 3):
  ids = np.repeat(np.arange(n, dtype=np.int32)[:, None], length, axis=1)
  return data.Split(
      input_ids=ids,
      attention_mask=np.ones_like(ids),
      labels=(np.arange(n) % num_classes).astype(np.int32),
      texts=[f"t{i}" for i in range(n)],
  )


# ---------------------------------------------------------------------------
# Registry and defaults.


def test_registry_and_aliases():
  assert set(data.REGISTRY) == {"sst2", "rotten_tomatoes", "imdb", "ag_news",
                                "trec"}
  for key, spec in data.REGISTRY.items():
    assert spec.name == key
    assert spec.num_classes == len(spec.label_names) >= 2
  assert data.get_spec("agnews") is data.REGISTRY["ag_news"]
  assert data.get_spec("AG_News") is data.REGISTRY["ag_news"]
  assert data.get_spec("sst-2") is data.REGISTRY["sst2"]
  sst2 = data.get_spec("sst2")
  assert (sst2.hf_id, sst2.hf_config) == ("glue", "sst2")
  assert (sst2.train_split, sst2.eval_split) == ("train", "validation")
  assert data.get_spec("imdb").eval_split == "test"
  ag = data.get_spec("ag_news")
  assert ag.num_classes == 4
  assert (ag.train_split, ag.eval_split) == ("test[:6000]", "test[6000:]")
  trec = data.get_spec("trec")
  assert trec.label_names == ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")
  assert (trec.hf_id, trec.text_field, trec.label_field) == (
      "trec", "text", "coarse_label")
  assert (trec.train_split, trec.eval_split) == ("train", "test")


def test_unknown_dataset_lists_known_names():
  with pytest.raises(UserError) as e:
    data.get_spec("mnist")
  msg = _one_line_error(e)
  for name in data.REGISTRY:
    assert name in msg


def test_default_locations(monkeypatch, tmp_path):
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
  monkeypatch.delenv(data.VOCAB_ENV, raising=False)
  repo_root = Path(data.__file__).resolve().parents[2]
  assert data.default_data_dir() == os.path.normpath(
      repo_root.parent / "shared" / "data")
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  monkeypatch.setenv(data.VOCAB_ENV, "some/hub-id")
  assert data.default_vocab() == "some/hub-id"
  monkeypatch.delenv(data.VOCAB_ENV)
  monkeypatch.setattr(data.sources, "_REPO_ROOT", tmp_path / "nowhere" / "repo")
  assert data.default_vocab() == data.HUB_VOCAB
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "c"))
  assert data.default_cache_dir() == str(tmp_path / "c")


# ---------------------------------------------------------------------------
# Real data.


@requires_data
@pytest.mark.parametrize("name", sorted(data.REGISTRY))
def test_real_datasets_load(name):
  spec = data.get_spec(name)
  for split in (spec.train_split, spec.eval_split):
    texts, labels = data.load_texts(name, split, limit=40)
    assert len(texts) == len(labels) == 40
    assert labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < spec.num_classes
    assert all(isinstance(t, str) and t.strip() for t in texts)


@requires_data
@pytest.mark.parametrize("name,split", [("rotten_tomatoes", "validation"),
                                        ("trec", "train"), ("trec", "test")])
def test_real_label_counts_match_manifest(name, split):
  texts, labels = data.load_texts(name, split)
  split_meta = _manifest()[name]["splits"][split]
  assert len(texts) == split_meta["rows"]
  counts = {str(c): int(n) for c, n in enumerate(np.bincount(labels))}
  assert counts == split_meta["labels"]


@requires_data
def test_ag_news_slices_disjoint_and_complete():
  spec = data.get_spec("agnews")
  train_x, train_y = data.load_texts("agnews", spec.train_split)
  eval_x, eval_y = data.load_texts("agnews", spec.eval_split)
  all_x, all_y = data.load_texts("agnews", "test")
  rows = _manifest()["ag_news"]["splits"]["test"]["rows"]
  assert (len(train_x), len(eval_x)) == (6000, 1600)
  assert len(train_x) + len(eval_x) == len(all_x) == rows == 7600
  # Contiguous, non-overlapping index ranges that tile the whole file.
  assert train_x + eval_x == all_x
  np.testing.assert_array_equal(np.concatenate([train_y, eval_y]), all_y)
  assert set(train_y.tolist()) == set(eval_y.tolist()) == {0, 1, 2, 3}
  # limit applies after the slice.
  head_x, _ = data.load_texts("ag_news", "test[6000:]", limit=5)
  assert head_x == eval_x[:5]


@requires_data
def test_slice_forms():
  full_x, full_y = data.load_texts("rotten_tomatoes", "validation")
  x, y = data.load_texts("rotten_tomatoes", "validation[10:20]")
  assert x == full_x[10:20]
  np.testing.assert_array_equal(y, full_y[10:20])
  x, _ = data.load_texts("rotten_tomatoes", "validation[-5:]")
  assert x == full_x[-5:]
  x, _ = data.load_texts("rotten_tomatoes", "validation[:10%]")
  assert x == full_x[:round(0.1 * len(full_x))]
  with pytest.raises(UserError) as e:
    data.load_texts("rotten_tomatoes", "validation[5")
  assert "bad split" in _one_line_error(e)
  with pytest.raises(UserError) as e:
    data.load_texts("rotten_tomatoes", "validation[5000:]")
  assert "no rows" in _one_line_error(e)


@requires_data
@requires_vocab
def test_tokenization_layout():
  split = data.load_split("sst2", "validation", max_len=24, limit=64)
  _, labels = data.load_texts("sst2", "validation", limit=64)
  assert len(split) == 64 and len(split.texts) == 64
  assert split.input_ids.shape == split.attention_mask.shape == (64, 24)
  for arr in (split.input_ids, split.attention_mask, split.labels):
    assert arr.dtype == np.int32
  np.testing.assert_array_equal(split.labels, labels)
  assert (split.input_ids[:, 0] == 101).all()
  lengths = split.attention_mask.sum(axis=1)
  # Mask is a prefix of ones covering exactly the non-pad tokens, ending in
  # [SEP].
  positions = np.arange(24)[None, :]
  np.testing.assert_array_equal(split.attention_mask,
                                (positions < lengths[:, None]).astype(np.int32))
  np.testing.assert_array_equal(split.attention_mask != 0,
                                split.input_ids != 0)
  assert (split.input_ids[np.arange(64), lengths - 1] == 102).all()
  assert ((split.input_ids == 102).sum(axis=1) == 1).all()


@requires_data
@requires_vocab
def test_truncation_keeps_sep():
  split = data.load_split("imdb", "test", max_len=8, limit=4)
  assert (split.attention_mask == 1).all()
  assert (split.input_ids[:, 0] == 101).all()
  assert (split.input_ids[:, -1] == 102).all()


@requires_data
@requires_vocab
def test_cache_hit_skips_reading_and_tokenizing(tmp_path, monkeypatch):
  cache = tmp_path / "tok_cache"
  kwargs = dict(max_len=16, limit=32, cache_dir=str(cache))
  first = data.load_split("rotten_tomatoes", "train", **kwargs)
  files = list(cache.iterdir())
  assert len(files) == 1 and files[0].suffix == ".npz", files

  def boom(*args, **kwargs):
    raise AssertionError("cache miss")

  monkeypatch.setattr(data, "get_tokenizer", boom)
  monkeypatch.setattr(data, "read_source", boom)
  second = data.load_split("rotten_tomatoes", "train", **kwargs)
  for field in ("input_ids", "attention_mask", "labels"):
    np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
  assert second.texts == first.texts
  # Any change to the key (here max_len) is a miss.
  with pytest.raises(AssertionError, match="cache miss"):
    data.load_split("rotten_tomatoes", "train", max_len=17, limit=32,
                    cache_dir=str(cache))
  assert [p.name for p in cache.iterdir()] == [files[0].name]  # No tmp left.


@requires_vocab
def test_cache_notices_changed_source(tmp_path):
  path = tmp_path / "d" / "sst2" / "train.jsonl.gz"
  _write_jsonl(path, [_rec("good film", 1), _rec("bad film", 0)])
  kwargs = dict(max_len=8, data_dir=str(tmp_path / "d"),
                cache_dir=str(tmp_path / "c"))
  assert data.load_split("sst2", "train", **kwargs).labels.tolist() == [1, 0]
  _write_jsonl(path, [_rec("good film", 0), _rec("bad film", 1),
                      _rec("okay film", 1)])
  os.utime(path, ns=(1, 1))
  split = data.load_split("sst2", "train", **kwargs)
  assert split.labels.tolist() == [0, 1, 1]
  assert split.texts[2] == "okay film"


def _npz(path: Path) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _with(arrays: dict, **changes) -> dict:
  return {**arrays, **changes}


# Each edit keeps the file's key, so only validation can catch it.
_CACHE_EDITS = {
    "label out of range": (
        lambda a: _with(a, labels=a["labels"] + 1), "labels values span"),
    "wrong length": (
        lambda a: _with(a, input_ids=a["input_ids"][:, :-1],
                        attention_mask=a["attention_mask"][:, :-1]),
        "input_ids has shape (3, 7)"),
    "wrong row count": (
        lambda a: _with(a, labels=a["labels"][:-1]),
        "input_ids has shape (3, 8), not [N, max_len] = (2, 8)"),
    "out-of-vocabulary id": (
        lambda a: _with(a, input_ids=np.where(a["input_ids"] == 102, 30522,
                                              a["input_ids"])),
        "input_ids values span [0, 30522], outside [0, 30522)"),
    "wrong dtype": (
        lambda a: _with(a, input_ids=a["input_ids"].astype(np.int64)),
        "input_ids is int64"),
    "mask not 0/1": (
        lambda a: _with(a, attention_mask=a["attention_mask"] * 2),
        "attention_mask values span [0, 2]"),
    "texts missing": (
        lambda a: _with(a, text_offsets=a["text_offsets"][:-1]),
        "2 texts for 3 rows"),
}


@requires_vocab
@pytest.mark.parametrize("edit", sorted(_CACHE_EDITS))
def test_invalid_cache_is_rebuilt(tmp_path, caplog, edit):
  change, problem = _CACHE_EDITS[edit]
  _write_jsonl(tmp_path / "d" / "sst2" / "train.jsonl",
               [_rec("good film", 1), _rec("bad film", 0),
                _rec("a long and winding film", 1)])
  kwargs = dict(max_len=8, data_dir=str(tmp_path / "d"),
                cache_dir=str(tmp_path / "c"))
  fresh = data.load_split("sst2", "train", **kwargs)
  [path] = (tmp_path / "c").iterdir()
  good = _npz(path)
  with open(path, "wb") as f:
    np.savez(f, **change(good))
  split = data.load_split("sst2", "train", **kwargs)
  for field in ("input_ids", "attention_mask", "labels"):
    assert getattr(split, field).dtype == np.int32
    np.testing.assert_array_equal(getattr(split, field), getattr(fresh, field))
  assert split.texts == fresh.texts
  assert [p.name for p in (tmp_path / "c").iterdir()] == [path.name]
  fixed = _npz(path)
  assert set(fixed) == set(good)
  for k, v in good.items():
    assert fixed[k].dtype == v.dtype
    np.testing.assert_array_equal(fixed[k], v)
  [warning] = [r.getMessage() for r in caplog.records
               if r.levelname == "WARNING"]
  assert str(path) in warning and problem in warning, warning


@requires_vocab
def test_tokenizer_sources_and_caching(tmp_path):
  tok = data.get_tokenizer(REAL_VOCAB)
  assert data.get_tokenizer(REAL_VOCAB) is tok
  assert len(tok.get_vocab()) == 30522
  # Counted without loading a tokenizer, for checking cached ids.
  assert data.tokenize.vocab_size(REAL_VOCAB) == len(tok) == 30522
  assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]
  folder_tok = data.get_tokenizer(os.path.dirname(REAL_VOCAB))
  assert folder_tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]
  with pytest.raises(UserError) as e:
    data.get_tokenizer(str(tmp_path / "missing" / "vocab.txt"))
  assert data.VOCAB_ENV in _one_line_error(e)


# ---------------------------------------------------------------------------
# Error cases on tiny files.


def test_malformed_json_reports_line(tmp_path):
  path = _write_jsonl(tmp_path / "sst2" / "train.jsonl.gz",
                      [_rec("fine", 0), _rec("also fine", 1),
                       '{"text": "broken", "label": '])
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "train", str(tmp_path))
  msg = _one_line_error(e)
  assert f"{path}:3" in msg and "malformed JSON" in msg


def test_bad_label_reports_line(tmp_path):
  path = _write_jsonl(tmp_path / "sst2" / "train.jsonl",
                      [_rec("fine", 0), _rec("four stars", 2)])
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "train", str(tmp_path))
  msg = _one_line_error(e)
  assert f"{path}:2" in msg and "label 2" in msg and "[0, 2)" in msg
  _write_jsonl(path, [_rec("fine", "positive")])
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "train", str(tmp_path))
  assert "not an integer" in _one_line_error(e)


def test_label_field_or_generic_label(tmp_path):
  # trec's hub column is coarse_label; local files may use either name.
  _write_jsonl(tmp_path / "trec" / "train.jsonl",
               [json.dumps({"text": "Who?", "coarse_label": 3}),
                _rec("Where?", 4)])
  assert data.load_texts("trec", "train", str(tmp_path))[1].tolist() == [3, 4]
  path = _write_jsonl(tmp_path / "trec" / "test.jsonl", [
      json.dumps({"text": "Who?", "fine_label": 3})])
  with pytest.raises(UserError) as e:
    data.load_texts("trec", "test", str(tmp_path))
  msg = _one_line_error(e)
  assert f"{path}:1" in msg and "missing field 'coarse_label' or 'label'" in msg


def test_empty_text_reports_line(tmp_path):
  path = _write_jsonl(tmp_path / "imdb" / "test.jsonl.gz",
                      [_rec("fine", 0), _rec("ok", 1), _rec(" \t ", 1)])
  with pytest.raises(UserError) as e:
    data.load_texts("imdb", "test", str(tmp_path))
  msg = _one_line_error(e)
  assert f"{path}:3" in msg and "empty" in msg


def test_missing_field(tmp_path):
  path = _write_jsonl(tmp_path / "imdb" / "test.jsonl.gz",
                      [json.dumps({"review": "fine", "label": 0})])
  with pytest.raises(UserError) as e:
    data.load_texts("imdb", "test", str(tmp_path))
  msg = _one_line_error(e)
  assert f"{path}:1" in msg and "missing field 'text'" in msg


def test_missing_split_lists_available(tmp_path):
  _write_jsonl(tmp_path / "sst2" / "train.jsonl.gz", [_rec("fine", 0)])
  _write_jsonl(tmp_path / "sst2" / "dev.jsonl", [_rec("fine", 0)])
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "validation", str(tmp_path))
  msg = _one_line_error(e)
  assert "'validation'" in msg and "available: dev, train" in msg


def test_missing_dirs(tmp_path, monkeypatch):
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "train", str(tmp_path / "nope"))
  msg = _one_line_error(e)
  assert data.DATA_DIR_ENV in msg and "nope" in msg
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "also-nope"))
  with pytest.raises(UserError) as e:
    data.load_split("sst2", "train", max_len=8)
  assert "also-nope" in _one_line_error(e)
  (tmp_path / "imdb").mkdir()
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "train", str(tmp_path))
  msg = _one_line_error(e)
  assert "sst2" in msg and "imdb" in msg


def test_bad_arguments(tmp_path):
  _write_jsonl(tmp_path / "sst2" / "train.jsonl", [_rec("fine", 0)])
  with pytest.raises(UserError) as e:
    data.load_split("sst2", "train", max_len=1, data_dir=str(tmp_path))
  assert "max_len=1" in _one_line_error(e)
  with pytest.raises(UserError):
    data.load_texts("sst2", "train", str(tmp_path), limit=0)


# ---------------------------------------------------------------------------
# Other formats and the hub path.


def test_csv(tmp_path):
  pd = pytest.importorskip("pandas")
  rows = {"sentence": ["NA", "a, quoted \"film\"", "multi\nline"],
          "label": [0, 1, 1]}
  (tmp_path / "sst2").mkdir()
  pd.DataFrame(rows).to_csv(tmp_path / "sst2" / "train.csv", index=False)
  texts, labels = data.load_texts("sst2", "train[1:]", str(tmp_path))
  assert texts == rows["sentence"][1:]
  assert labels.tolist() == [1, 1]
  texts, _ = data.load_texts("sst2", "train", str(tmp_path))
  assert texts[0] == "NA"  # Not turned into NaN.
  pd.DataFrame({"text": ["x"], "y": [0]}).to_csv(
      tmp_path / "sst2" / "validation.csv", index=False)
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "validation", str(tmp_path))
  assert "missing column 'label'" in _one_line_error(e)
  pd.DataFrame({"text": ["x", "y"], "label": [0, 7]}).to_csv(
      tmp_path / "sst2" / "bad.csv", index=False)
  with pytest.raises(UserError) as e:
    data.load_texts("sst2", "bad", str(tmp_path))
  assert "bad.csv row 2" in _one_line_error(e)


def test_parquet(tmp_path):
  pd = pytest.importorskip("pandas")
  pytest.importorskip("pyarrow")
  (tmp_path / "ag_news").mkdir()
  frame = pd.DataFrame({"text": [f"news {i}" for i in range(10)],
                        "label": np.arange(10) % 4})
  frame.to_parquet(tmp_path / "ag_news" / "test.parquet")
  texts, labels = data.load_texts("agnews", "test[6:]", str(tmp_path))
  assert texts == [f"news {i}" for i in range(6, 10)]
  assert labels.tolist() == [2, 3, 0, 1]


def test_hub_path_uses_load_dataset(monkeypatch):
  datasets = pytest.importorskip("datasets")
  calls = []

  def fake_load_dataset(path, name=None, split=None):
    calls.append((path, name, split))
    return datasets.Dataset.from_dict(
        {"sentence": ["good ", "bad ", "fine "], "label": [1, 0, 1],
         "idx": [0, 1, 2]})

  monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
  texts, labels = data.load_texts("sst2", "validation", "hub", limit=2)
  assert calls == [("glue", "sst2", "validation")]
  assert texts == ["good ", "bad "] and labels.tolist() == [1, 0]


# ---------------------------------------------------------------------------
# Folder datasets (no registry entry).


def test_folder_dataset_without_dataset_json(tmp_path):
  folder = tmp_path / "My Reviews"
  _write_jsonl(folder / "train.jsonl.gz",
               [_rec("good", 2), _rec("bad", 0), _rec("meh", 2)])
  _write_jsonl(folder / "test.jsonl", [_rec("fine", 1)])
  spec = data.get_spec(str(folder))
  assert re.fullmatch(r"my_reviews_[0-9a-f]{8}", spec.name), spec.name
  assert spec.label_names == ("0", "1", "2")
  assert (spec.train_split, spec.eval_split) == ("train", "test")
  assert data.get_spec(str(folder)) == spec  # Stable name.
  # Callers pass spec.name back (as experiment.setup does).
  assert data.get_spec(spec.name) == spec
  # data_dir is ignored for folder datasets, even "hub".
  texts, labels = data.load_texts(spec.name, "train[1:]", "hub")
  assert texts == ["bad", "meh"] and labels.tolist() == [0, 2]
  _write_jsonl(folder / "validation.jsonl", [_rec("ok", 1)])
  assert data.get_spec(str(folder)).eval_split == "validation"
  other = tmp_path / "elsewhere" / "My Reviews"
  _write_jsonl(other / "train.jsonl", [_rec("a", 0), _rec("b", 1)])
  assert data.get_spec(str(other)).name != spec.name


def test_folder_dataset_json(tmp_path):
  folder = tmp_path / "reviews"
  _write_jsonl(folder / "all.jsonl", [
      json.dumps({"review": f"r{i}", "stars": i % 3}) for i in range(10)])
  (folder / "dataset.json").write_text(json.dumps({
      "label_names": ["bad", "okay", "good", "great"],
      "train_split": "all[:8]", "eval_split": "all[8:]",
      "text_field": "review", "label_field": "stars"}))
  spec = data.get_spec(str(folder))
  assert spec.label_names == ("bad", "okay", "good", "great")
  assert (spec.text_field, spec.label_field) == ("review", "stars")
  texts, labels = data.load_texts(str(folder), spec.eval_split)
  assert texts == ["r8", "r9"] and labels.tolist() == [2, 0]


@requires_vocab
def test_folder_dataset_load_split(tmp_path):
  folder = tmp_path / "tiny"
  _write_jsonl(folder / "train.jsonl.gz", [_rec("good film", 1),
                                           _rec("bad film", 0)])
  cache = tmp_path / "c"
  split = data.load_split(str(folder), "train", max_len=8,
                          data_dir=str(tmp_path / "nope"), cache_dir=cache)
  assert split.labels.tolist() == [1, 0] and split.input_ids.shape == (2, 8)
  name = data.get_spec(str(folder)).name
  assert [p.name.startswith(f"{name}-train-") for p in cache.iterdir()] == [
      True]


@pytest.mark.parametrize("files,expected", [
    ({}, "has no split files"),
    ({"test.jsonl": _rec("x", 1)}, "no 'train' split"),
    ({"train.jsonl": _rec("x", 0)}, "only label 0"),
    ({"train.jsonl": _rec("x", "pos")}, "train.jsonl:1: label 'pos' is not"),
    ({"train.jsonl": _rec("x", -1)}, "label -1 is not a class id"),
    ({"train.jsonl": _rec("x", 1), "dataset.json": "{"}, "cannot read"),
    ({"train.jsonl": _rec("x", 1), "dataset.json": "[]"}, "not an object"),
    ({"train.jsonl": _rec("x", 1), "dataset.json": '{"labels": ["a", "b"]}'},
     "unknown key 'labels'"),
    ({"train.jsonl": _rec("x", 1), "dataset.json": '{"label_names": "ab"}'},
     "label_names is 'ab'"),
    ({"train.jsonl": _rec("x", 1), "dataset.json": '{"eval_split": "t[1"}'},
     "bad split 't[1'"),
])
def test_folder_dataset_errors(tmp_path, files, expected):
  folder = tmp_path / "d"
  folder.mkdir()
  for name, content in files.items():
    (folder / name).write_text(content + "\n")
  with pytest.raises(UserError) as e:
    data.get_spec(str(folder))
  msg = _one_line_error(e)
  assert expected in msg and str(folder) in msg, msg


def test_folder_dataset_missing_path(tmp_path):
  with pytest.raises(UserError) as e:
    data.get_spec(str(tmp_path / "nope"))
  assert "nope does not exist" in _one_line_error(e)
  (tmp_path / "file.jsonl").write_text(_rec("x", 0) + "\n")
  with pytest.raises(UserError) as e:
    data.load_texts(str(tmp_path / "file.jsonl"), "train")
  assert "file.jsonl is not a folder" in _one_line_error(e)


# ---------------------------------------------------------------------------
# Sampling and batching.


def test_sample_per_class():
  labels = np.array([0, 1, 2] * 10 + [1] * 5)
  idx = data.sample_per_class(labels, 4, 3, seed=7)
  assert idx.shape == (12,) and len(set(idx.tolist())) == 12
  np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(3), 4))
  np.testing.assert_array_equal(idx, data.sample_per_class(labels, 4, 3, 7))
  assert not np.array_equal(idx, data.sample_per_class(labels, 4, 3, 8))
  with pytest.raises(UserError) as e:
    data.sample_per_class(labels, 11, 3, seed=0)
  msg = _one_line_error(e)
  assert "class 0 has only 10" in msg and "n_per_class" in msg
  with pytest.raises(UserError) as e:
    data.sample_per_class(labels, 1, 4, seed=0)
  assert "class 3 has only 0" in _one_line_error(e)


def test_split_subset():
  split = _synthetic_split(10)
  sub = split.subset([7, 2])
  assert sub.texts == ["t7", "t2"] and sub.labels.tolist() == [1, 2]
  assert sub.input_ids.shape == (2, 4) and len(sub) == 2
  assert len(split.subset(split.labels == 0)) == 4


def test_batch_iterator_epoch():
  split = _synthetic_split(103)
  assert data.num_batches(103, 10, True) == 10
  assert data.num_batches(103, 10, False) == 11
  batches = list(data.batch_iterator(split, 10, seed=1, epoch=0))
  assert len(batches) == 10
  assert all(set(b) == {"input_ids", "attention_mask", "labels"}
             for b in batches)
  assert all(b["input_ids"].shape == (10, 4) for b in batches)
  seen = np.concatenate([b["input_ids"][:, 0] for b in batches])
  assert len(set(seen.tolist())) == 100  # No repeats within an epoch.
  np.testing.assert_array_equal(
      [b["labels"] for b in batches], split.labels[seen].reshape(10, 10))
  again = list(data.batch_iterator(split, 10, seed=1, epoch=0))
  np.testing.assert_array_equal(
      np.stack([b["input_ids"] for b in batches]),
      np.stack([b["input_ids"] for b in again]))
  other = list(data.batch_iterator(split, 10, seed=1, epoch=1))
  assert not np.array_equal(
      seen, np.concatenate([b["input_ids"][:, 0] for b in other]))
  ordered = list(data.batch_iterator(split, 10, seed=0, epoch=0,
                                     shuffle=False, drop_remainder=False))
  assert [len(b["labels"]) for b in ordered] == [10] * 10 + [3]
  np.testing.assert_array_equal(
      np.concatenate([b["input_ids"][:, 0] for b in ordered]), np.arange(103))
  with pytest.raises(UserError) as e:
    data.batch_iterator(_synthetic_split(5), 8, seed=0, epoch=0)
  assert "batch_size=8" in _one_line_error(e)


def test_stacked_batches():
  split = _synthetic_split(25, length=6)
  stacked = data.stacked_batches(split, 4, 13, seed=3)
  assert stacked["input_ids"].shape == (13, 4, 6)
  assert stacked["attention_mask"].shape == (13, 4, 6)
  assert stacked["labels"].shape == (13, 4)
  # Same batches as batch_iterator chained over epochs 0, 1, 2.
  chained = [b for e in range(3)
             for b in data.batch_iterator(split, 4, seed=3, epoch=e)][:13]
  np.testing.assert_array_equal(stacked["input_ids"],
                                np.stack([b["input_ids"] for b in chained]))
  np.testing.assert_array_equal(
      data.stacked_batches(split, 4, 13, seed=3)["labels"], stacked["labels"])
  assert not np.array_equal(
      data.stacked_batches(split, 4, 13, seed=4)["labels"], stacked["labels"])


def test_length_batches_cover_every_row_once_cut_to_what_it_needs():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 41, 23)
  mask = (np.arange(40)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask > 0, rng.integers(1, 99, mask.shape), 0).astype(np.int32)
  split = data.Split(ids, mask, np.zeros(23, np.int32), [""] * 23)
  seen = []
  for idx, b_ids, b_mask in data.length_batches(split, 5, multiple=16):
    assert b_ids.shape == b_mask.shape and b_ids.shape[0] == 5  # the last batch is padded to full size
    assert b_ids.shape[1] in (16, 32, 40)  # rounded up to 16, never past max_len
    assert b_ids.shape[1] >= lengths[idx].max() and b_ids.shape[1] - 16 < lengths[idx].max()
    np.testing.assert_array_equal(b_ids[:len(idx)], ids[idx, :b_ids.shape[1]])
    np.testing.assert_array_equal(b_mask[:len(idx)].sum(1), lengths[idx])  # no real token is cut
    assert not b_mask[len(idx):].any()
    seen.extend(idx.tolist())
  assert sorted(seen) == list(range(23))
  assert [lengths[i] for i in seen] == sorted(lengths)  # similar lengths share a batch


def _numbered_split(n: int) -> data.Split:
  ids = np.arange(n, dtype=np.int32)[:, None].repeat(4, 1)
  return data.Split(input_ids=ids, attention_mask=np.ones_like(ids), labels=(np.arange(n) % 2).astype(np.int32),
                    texts=[str(i) for i in range(n)])


def test_holdout_rows_are_disjoint_from_training_rows_and_cover_the_split():
  rows, held = data.holdout(_numbered_split(100), 10, seed=0)
  assert len(held) == 10 and len(rows) == 90
  kept, out = set(rows.input_ids[:, 0]), set(held.input_ids[:, 0])
  assert not kept & out and kept | out == set(range(100))
  assert sorted(out) != list(range(10))  # random rows, not the file's first (files can be sorted by label)
  again, held_again = data.holdout(_numbered_split(100), 10, seed=0)
  np.testing.assert_array_equal(held.input_ids, held_again.input_ids)


def test_a_prefix_of_the_held_out_rows_is_a_random_draw_from_a_label_sorted_file():
  n = 2000
  ids = np.arange(n, dtype=np.int32)[:, None].repeat(4, 1)
  by_label = data.Split(input_ids=ids, attention_mask=np.ones_like(ids),
                        labels=(np.arange(n) >= n // 2).astype(np.int32), texts=[str(i) for i in range(n)])
  _, held = data.holdout(by_label, 1000, seed=0)
  first = np.bincount(held.labels[:500], minlength=2)
  assert first.min() > 200, first  # in file order this prefix was ~97% one class (the periodic checks' rows)


def test_holding_out_half_the_split_is_refused_with_the_fix():
  with pytest.raises(UserError, match="lower --config.data.holdout_rows"):
    data.holdout(_numbered_split(30), 16, seed=0)
