"""A distilled set as plain files, so it outlives the run and trains models outside JAX.

`directory/set.safetensors` is the set: every array of `materialize`'s output
(with "attention" [M, layers, heads, L, L] probabilities when the set has
attention labels) plus the learned per-step `step_sizes`, as float32/int32
tensors, and string metadata (`format`, `format_version`, `inputs`, JSON `config`, `label_names`
and, when known, `texts` and `model_config`). `directory/set.jsonl` lists it
for people: one line per example with its label, soft label and text.
Nothing here imports JAX, so `load_distilled` serves PyTorch users too
(examples/train_torch_on_distilled.py).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as safetensors_bytes

from distill_jax.errors import UserError

FORMAT = "distill_jax.synthetic_set"
# Version 2 adds the optional "attention" labels; sets without them are still written as version 1, so
# readers that would train on them without their KL term (older releases) refuse only those that have them.
FORMAT_VERSION = 2
SET_FILE = "set.safetensors"
LISTING_FILE = "set.jsonl"
# The arrays `synthetic.<kind>.materialize` returns, by kind of inputs.
KEYS = {"embeddings": ("inputs_embeds", "attention_mask", "targets"),
        "tokens": ("token_probs", "token_vocab", "attention_mask", "targets")}
# Arrays a set of either kind may add (`synthetic.WithAttention`).
OPTIONAL_KEYS = ("attention",)
# Stored as int32; everything else as float32, what the inner loop computes in.
INT_KEYS = ("attention_mask", "token_vocab")


def save_set(directory: str, arrays: Mapping[str, Any], step_sizes: Any, *, config: dict,
             label_names: Sequence[str], texts: Optional[Sequence[str]] = None,
             model_config: Optional[dict] = None) -> str:
  """Writes `directory/set.safetensors` and `directory/set.jsonl`; returns `directory`.

  `arrays` is `materialize`'s output (numpy or JAX arrays), `step_sizes` the
  positive per-step learning rates [T] or [T, G] (`synthetic.step_sizes`),
  `config` the run's config as a JSON-able dict (tuples come back as lists),
  `model_config` the BERT architecture (HF config.json keys,
  `bert.BertConfig.to_dict()`) so the set can be replayed without our presets.
  Both files are staged as temporary files and moved into place only once both
  are complete, `set.safetensors` last: an interrupted export leaves the
  previous set (or none), never part of one.
  """
  inputs = _inputs_kind(arrays)
  tensors = {k: np.asarray(arrays[k], np.int32 if k in INT_KEYS else np.float32)
             for k in (*KEYS[inputs], *OPTIONAL_KEYS) if k in arrays}
  tensors["step_sizes"] = np.asarray(step_sizes, np.float32)
  _check_shapes(tensors, label_names, texts)
  version = FORMAT_VERSION if "attention" in tensors else 1
  metadata = {"format": FORMAT, "format_version": str(version), "inputs": inputs,
              "config": json.dumps(config), "label_names": json.dumps(list(label_names))}
  if texts is not None:
    metadata["texts"] = json.dumps(list(texts))
  if model_config is not None:
    metadata["model_config"] = json.dumps(model_config)
  listing = "".join(json.dumps(line) + "\n" for line in _listing(tensors["targets"], label_names, texts))
  files = [(LISTING_FILE, listing.encode()), (SET_FILE, safetensors_bytes(tensors, metadata=metadata))]
  _write_all(directory, files)
  return directory


def load_distilled(path: str) -> dict:
  """A set written by `save_set`, from its directory or its .safetensors file.

  Returns numpy arrays under `materialize`'s keys (with "attention" when the
  set has attention labels) plus "step_sizes", and
  "inputs" ("embeddings" or "tokens": which keys), "config", "label_names",
  "texts" and "model_config" (None when not saved).
  """
  file = os.path.join(path, SET_FILE) if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise UserError(f"no distilled set at {path}; pass an export directory or its {SET_FILE}")
  try:
    with safe_open(file, framework="numpy") as f:
      metadata = f.metadata() or {}
      arrays = {k: f.get_tensor(k) for k in f.keys()}
  except SafetensorError:
    metadata = {}
  if metadata.get("format") != FORMAT:
    raise UserError(f"{file} is not a distilled set of distill_jax; pass a directory written by export.save_set")
  if int(metadata["format_version"]) > FORMAT_VERSION:
    raise UserError(f"{file} has format version {metadata['format_version']} (this distill_jax reads up to "
                    f"{FORMAT_VERSION}); upgrade distill_jax")
  optional = lambda key: json.loads(metadata[key]) if key in metadata else None
  return {**arrays, "inputs": metadata["inputs"], "config": json.loads(metadata["config"]),
          "label_names": json.loads(metadata["label_names"]), "texts": optional("texts"),
          "model_config": optional("model_config")}


def holds_set(path: str) -> bool:
  """Whether `path` is an export (its directory or its .safetensors file) rather than a checkpoint."""
  return os.path.isfile(os.path.join(path, SET_FILE)) or (os.path.isfile(path) and path.endswith(".safetensors"))


def _inputs_kind(arrays: Mapping[str, Any]) -> str:
  kind = "tokens" if "token_probs" in arrays else "embeddings"
  if set(arrays) - set(OPTIONAL_KEYS) != set(KEYS[kind]):
    raise ValueError(f"a materialized set has keys {KEYS['embeddings']} or {KEYS['tokens']} (and optionally "
                     f"{OPTIONAL_KEYS}); got {sorted(arrays)}")
  return kind


def _check_shapes(t: dict[str, np.ndarray], label_names: Sequence[str], texts: Optional[Sequence[str]]) -> None:
  """`materialize`'s shapes: [M, L, H|K] inputs, [M, L] mask, [M, C] targets (C label names), [M, K] vocab,
  [M, layers, heads, L, L] attention."""
  x = t.get("inputs_embeds", t.get("token_probs"))
  m, l, k = x.shape if x.ndim == 3 else (None, None, None)
  want = {"attention_mask": (m, l), "targets": (m, len(label_names))}
  if "token_vocab" in t:
    want["token_vocab"] = (m, k)
  if "attention" in t:
    want["attention"] = (m, *t["attention"].shape[1:3], l, l)
  got = {key: t[key].shape for key in want}
  if x.ndim != 3 or got != want:
    raise ValueError(f"set shapes {got} with inputs {x.shape} and {len(label_names)} label names; want {want}")
  if t["step_sizes"].ndim not in (1, 2):
    raise ValueError(f"step_sizes have shape {t['step_sizes'].shape}; want [T] or [T, G]")
  if texts is not None and len(texts) != m:
    raise ValueError(f"{len(texts)} texts for {m} examples")


def _listing(targets: np.ndarray, label_names: Sequence[str], texts: Optional[Sequence[str]]) -> list[dict]:
  """One record per example: its label is the argmax of its (soft) target."""
  out = []
  for i, row in enumerate(targets):
    label = int(np.argmax(row))
    line = {"index": i, "label": label, "label_name": label_names[label], "targets": row.tolist()}
    if texts is not None:
      line["text"] = texts[i]
    out.append(line)
  return out


def _write_all(directory: str, files: list[tuple[str, bytes]]) -> None:
  """Stages every file (written and fsynced) before moving any into place; write errors become UserErrors.

  Staged with `open`, not `mkstemp`, so the files get the umask's permissions, not 0600.
  """
  staged, path = [], directory
  try:
    os.makedirs(directory, exist_ok=True)
    for name, payload in files:
      path = os.path.join(directory, name)
      staged.append(os.path.join(directory, f".{name}.{os.getpid()}.tmp"))
      with open(staged[-1], "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
  except OSError as e:
    for tmp in staged:
      if os.path.exists(tmp):
        os.remove(tmp)
    if e.errno == errno.ENOSPC:
      raise UserError(f"no space left on device writing {path}; free space or export elsewhere") from None
    raise UserError(f"cannot write {path} ({e.strerror}); export to a writable directory") from None
  for (name, _), tmp in zip(files, staged):
    os.replace(tmp, os.path.join(directory, name))
