"""Which datasets exist and how their columns and splits are named."""

from __future__ import annotations

import dataclasses

from distill_jax.errors import UserError


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
