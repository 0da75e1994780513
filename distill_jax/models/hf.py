"""Hugging Face BERT checkpoints <-> our Flax parameter tree.

Distillation starts from pretrained encoders, and parity tests need to push
our weights into `transformers`' PyTorch model, so both directions go through
ONE table (`_mapping`) of (HF name, our path, layout). HF names are the
PyTorch `BertForSequenceClassification` ones (`bert.` prefix, Linear weights
stored (out, in)); Flax msgpack checkpoints are renamed into that form first.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.errors import UserError
from distill_jax.models import bert

# Weight files in order of preference: safetensors needs no code execution and
# no torch; the msgpack is HF's Flax export; the pickle needs torch.
_WEIGHT_FILES = ("model.safetensors", "flax_model.msgpack", "pytorch_model.bin")
_IGNORED = frozenset({"bert.embeddings.position_ids"})  # a buffer, not a weight
_PREFIX = "bert."


class Layout(enum.Enum):
  """How a tensor's HF (PyTorch) layout relates to ours."""

  SAME = "same"        # embedding tables: identical
  VECTOR = "vector"    # biases / LayerNorm: HF flat, ours may be (heads, head_dim)
  KERNEL1 = "kernel1"  # Linear: HF (out, in); ours (in, *out)
  KERNEL2 = "kernel2"  # Linear: HF (out, in); ours (*in[2], out)


_KERNEL_IN_AXES = {Layout.KERNEL1: 1, Layout.KERNEL2: 2}


@dataclasses.dataclass(frozen=True)
class _Entry:
  hf: str
  ours: tuple[str, ...]
  layout: Layout


@dataclasses.dataclass
class LoadReport:
  """What `from_pretrained` could not match; HF logs the same on load."""

  missing: list[str]     # our params left at their fresh init ("a/b/c" paths)
  unexpected: list[str]  # checkpoint tensors that were not used (checkpoint names)


# ----------------------------------------------------------------------------
# The mapping table.


def _dense(hf: str, ours: tuple[str, ...], kernel: Layout) -> list[_Entry]:
  return [_Entry(f"{hf}.weight", ours + ("kernel",), kernel),
          _Entry(f"{hf}.bias", ours + ("bias",), Layout.VECTOR)]


def _layer_norm(hf: str, ours: tuple[str, ...]) -> list[_Entry]:
  return [_Entry(f"{hf}.weight", ours + ("scale",), Layout.VECTOR),
          _Entry(f"{hf}.bias", ours + ("bias",), Layout.VECTOR)]


def _layer(i: int) -> list[_Entry]:
  hf, ours = f"bert.encoder.layer.{i}", (f"layer_{i}",)
  attn = ours + ("attention",)
  return [
      *_dense(f"{hf}.attention.self.query", attn + ("query",), Layout.KERNEL1),
      *_dense(f"{hf}.attention.self.key", attn + ("key",), Layout.KERNEL1),
      *_dense(f"{hf}.attention.self.value", attn + ("value",), Layout.KERNEL1),
      *_dense(f"{hf}.attention.output.dense", attn + ("output",), Layout.KERNEL2),
      *_layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention_LayerNorm",)),
      *_dense(f"{hf}.intermediate.dense", ours + ("intermediate",), Layout.KERNEL1),
      *_dense(f"{hf}.output.dense", ours + ("output",), Layout.KERNEL1),
      *_layer_norm(f"{hf}.output.LayerNorm", ours + ("output_LayerNorm",)),
  ]


def _mapping(num_layers: int) -> list[_Entry]:
  """Every parameter of our model, with its HF name and layout."""
  emb = ("embeddings",)
  entries = [
      _Entry(f"bert.embeddings.{n}.weight", emb + (n, "embedding"), Layout.SAME)
      for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
  ]
  entries += _layer_norm("bert.embeddings.LayerNorm", emb + ("LayerNorm",))
  for i in range(num_layers):
    entries += _layer(i)
  entries += _dense("bert.pooler.dense", ("pooler",), Layout.KERNEL1)
  entries += _dense("classifier", ("classifier",), Layout.KERNEL1)
  return entries


def _num_layers(params: Mapping[str, Any]) -> int:
  return sum(1 for k in params if k.startswith("layer_"))


# ----------------------------------------------------------------------------
# Layout conversion (the only place that knows about transposes).


def _hf_shape(our_shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
  if layout is Layout.SAME:
    return tuple(our_shape)
  if layout is Layout.VECTOR:
    return (math.prod(our_shape),)
  n_in = _KERNEL_IN_AXES[layout]
  return (math.prod(our_shape[n_in:]), math.prod(our_shape[:n_in]))


def _to_hf(x: np.ndarray, layout: Layout) -> np.ndarray:
  x = np.array(x)  # an owned, writable copy: torch.from_numpy warns on read-only views
  if layout in _KERNEL_IN_AXES:
    n_in = _KERNEL_IN_AXES[layout]
    return np.ascontiguousarray(x.reshape(math.prod(x.shape[:n_in]), -1).T)
  return x.reshape(_hf_shape(x.shape, layout))


def _from_hf(t: np.ndarray, our_shape: tuple[int, ...], layout: Layout) -> np.ndarray:
  t = np.asarray(t)
  return (t.T if layout in _KERNEL_IN_AXES else t).reshape(our_shape)


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for k in path[:-1]:
    tree = tree[k]
  tree[path[-1]] = value


# ----------------------------------------------------------------------------
# Export.


def to_hf_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our params as an HF `BertForSequenceClassification` state dict (numpy).

  Feed it to `torch.nn.Module.load_state_dict` (after `torch.from_numpy`) or to
  `safetensors.numpy.save_file` to export a checkpoint HF can read.
  """
  return {e.hf: _to_hf(np.asarray(_get(params, e.ours)), e.layout)
          for e in _mapping(_num_layers(params))}


# ----------------------------------------------------------------------------
# Reading checkpoints.


def _canonical(name: str) -> str:
  """HF name as in `_mapping`: `bert.` prefix on the encoder, old gamma/beta renamed."""
  if name.endswith(".gamma"):
    name = name[: -len("gamma")] + "weight"
  elif name.endswith(".beta"):
    name = name[: -len("beta")] + "bias"
  if not name.startswith(_PREFIX) and not name.startswith("classifier."):
    name = _PREFIX + name
  return name


_FLAX_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def _flax_to_torch_names(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF Flax names/layouts -> HF PyTorch ones, so one table serves both formats."""
  out = {}
  for name, x in flat.items():
    stem, _, leaf = name.rpartition(".")
    if leaf == "kernel":
      x = np.asarray(x).T
    out[f"{stem}.{_FLAX_LEAVES.get(leaf, leaf)}"] = x
  return out


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  return load_file(str(path))


def _read_msgpack(path: pathlib.Path) -> dict[str, np.ndarray]:
  from flax import serialization, traverse_util
  tree = serialization.msgpack_restore(path.read_bytes())
  return _flax_to_torch_names(traverse_util.flatten_dict(tree, sep="."))


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise UserError(f"{path} is a PyTorch pickle and torch is not installed; "
                    "pip install torch, or convert it to model.safetensors") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


_READERS = {"model.safetensors": _read_safetensors, "flax_model.msgpack": _read_msgpack,
            "pytorch_model.bin": _read_torch}


def _read_weights(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  for fname in _WEIGHT_FILES:
    if (model_dir / fname).is_file():
      logging.info("reading %s", model_dir / fname)
      return _READERS[fname](model_dir / fname)
  raise UserError(f"no weights in {model_dir}: expected one of {', '.join(_WEIGHT_FILES)}")


# ----------------------------------------------------------------------------
# Resolving a path or hub id to a local directory.


def _download(repo_id: str) -> pathlib.Path:
  """Fetch config + ONE weight format (the preferred one the repo has)."""
  from huggingface_hub import snapshot_download
  for fname in _WEIGHT_FILES:
    local = pathlib.Path(snapshot_download(repo_id, allow_patterns=["config.json", fname]))
    if (local / fname).is_file():
      return local
  return local  # `_read_weights` reports the missing weights


def _resolve(path_or_hub_id: str | os.PathLike) -> pathlib.Path:
  local = pathlib.Path(path_or_hub_id).expanduser()
  if local.is_dir():
    return local
  if local.exists():
    raise UserError(f"{local} is a file; pass the directory holding config.json and the weights")
  try:
    from huggingface_hub import errors
    try:
      return _download(str(path_or_hub_id))
    except (ValueError, OSError, errors.HTTPError) as e:
      reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
  except ImportError:
    reason = "huggingface_hub is not installed"
  raise UserError(
      f"cannot load {str(path_or_hub_id)!r}: no such local directory and not fetchable from "
      f"the Hugging Face Hub ({reason}); pass a directory with config.json + model.safetensors, "
      "or a hub id such as 'google/bert_uncased_L-2_H-128_A-2' with network access "
      "(and HF_HUB_OFFLINE unset)")


def _read_config(model_dir: pathlib.Path, num_labels: int) -> bert.BertConfig:
  path = model_dir / "config.json"
  if not path.is_file():
    raise UserError(f"no config.json in {model_dir}; it must be a Hugging Face BERT model directory")
  return bert.BertConfig.from_dict(json.loads(path.read_text()), num_labels=num_labels)


# ----------------------------------------------------------------------------
# Loading.


def read_config(path_or_hub_id: str | os.PathLike, num_labels: int) -> bert.BertConfig:
  """The model's shape from config.json alone, so a config can be checked before any weights load."""
  return _read_config(_resolve(path_or_hub_id), num_labels)


def _check_shape(entry: _Entry, got: tuple[int, ...], want: tuple[int, ...]) -> None:
  if tuple(got) != tuple(want):
    raise UserError(f"checkpoint tensor {entry.hf} has shape {tuple(got)} but the model "
                    f"(from config.json) needs {tuple(want)}; config and weights disagree")


def _fill(params: dict[str, Any], tensors: Mapping[str, np.ndarray], dtype: Any
          ) -> tuple[list[str], set[str]]:
  """Overwrite `params` in place from `tensors`; return (missing, used names)."""
  missing, used = [], set()
  for e in _mapping(_num_layers(params)):
    if e.hf not in tensors:
      missing.append("/".join(e.ours))
      continue
    ours = _get(params, e.ours)
    t = tensors[e.hf]
    want = _hf_shape(ours.shape, e.layout)
    if e.ours[0] == "classifier" and tuple(t.shape) != want:
      logging.warning("classifier %s has shape %s, not %s for num_labels; keeping a fresh head",
                      e.hf, tuple(t.shape), want)
      missing.append("/".join(e.ours))
      continue
    _check_shape(e, t.shape, want)
    _set(params, e.ours, jnp.asarray(_from_hf(t, ours.shape, e.layout), dtype))
    used.add(e.hf)
  return missing, used


def from_pretrained(path_or_hub_id: str | os.PathLike, num_labels: int, *, rng: jax.Array,
                    dtype: Any = jnp.float32
                    ) -> tuple[bert.BertConfig, dict, LoadReport]:
  """Config + params from a HF BERT directory or hub id; unmatched params stay fresh.

  `rng` initialises whatever the checkpoint lacks (for a plain `BertModel`
  checkpoint: the classifier head). `dtype` is the parameter dtype.
  Returns `(config, params, report)`; the report is also logged.
  """
  model_dir = _resolve(path_or_hub_id)
  config = _read_config(model_dir, num_labels)
  params = bert.init_params(bert.BertForSequenceClassification(config), rng)
  params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
  raw = _read_weights(model_dir)
  source = {}  # canonical name -> the checkpoint name it came from (first wins)
  for name in raw:
    source.setdefault(_canonical(name), name)
  missing, used = _fill(params, {c: raw[n] for c, n in source.items()}, dtype)
  unexpected = sorted(n for n in raw if _canonical(n) not in _IGNORED
                      and (_canonical(n) not in used or source[_canonical(n)] != n))
  report = LoadReport(missing=missing, unexpected=unexpected)
  _log(model_dir, report)
  return config, params, report


def _log(model_dir: pathlib.Path, report: LoadReport) -> None:
  if report.missing and all(m.startswith("classifier/") for m in report.missing):
    logging.info("%s: a fresh classifier head (the checkpoint has none)", model_dir)
  elif report.missing:
    logging.warning("%s: %d params not in the checkpoint, freshly initialised: %s",
                    model_dir, len(report.missing), ", ".join(report.missing))
  if report.unexpected:
    logging.warning("%s: %d checkpoint tensors unused: %s",
                    model_dir, len(report.unexpected), ", ".join(report.unexpected))
  if not report.missing and not report.unexpected:
    logging.info("%s: all params loaded", model_dir)
