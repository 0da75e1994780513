"""Regenerates the results tables in README.md from the result files in results/.

Each table sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers;
nothing inside them is typed by hand. Run: `python scripts/make_tables.py`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("sst2", "rotten_tomatoes", "imdb", "ag_news")
NAMES = {"sst2": "SST-2", "rotten_tomatoes": "Rotten Tomatoes", "imdb": "IMDB",
         "ag_news": "AG News (train test[:6000], eval test[6000:])"}
PAPER_TINY = {"sst2": 80.96, "rotten_tomatoes": 78.99, "imdb": 87.44, "ag_news": 93.22}
PAPER_DISTILLED = {"sst2": 61, "rotten_tomatoes": 57, "imdb": 62, "ag_news": 36}


def load(pattern: str) -> dict[str, dict]:
  out = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "results", pattern))):
    out[os.path.splitext(os.path.basename(path))[0]] = json.load(open(path))
  return out


def pct(x: float) -> str:
  return f"{100 * x:.2f}"


def mean_std(s: dict | None) -> str:
  return "—" if not s else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def table1() -> str:
  runs = load("table1/*.json")
  rows = ["| dataset | BERT-Tiny, random init (ours) | paper's BERT-Tiny (pretrained) | MiniLM-L6, pretrained (ours) |",
          "|---|---|---|---|"]
  for d in DATASETS:
    tiny, mini = runs.get(f"tiny_{d}"), runs.get(f"minilm_{d}")
    rows.append(f"| {NAMES[d]} | {pct(tiny['best_eval_accuracy']) if tiny else '—'} | {PAPER_TINY[d]} | "
                f"{pct(mini['best_eval_accuracy']) if mini else '—'} |")
  cmds = [f"- `{name}`: `{r['command']}` (best of {len(r['eval_accuracy_per_epoch'])} epochs)"
          for name, r in runs.items()]
  return "\n".join(rows + ["", "Commands (each via `bash scripts/table1.sh NAME`):", *cmds])


def table2() -> str:
  runs = load("table2/*.json")
  rows = ["| dataset | n/class | T | distilled (ours) | random real subset | decoded (cosine) | paper's distilled |",
          "|---|---|---|---|---|---|---|"]
  for d in DATASETS:
    r = runs.get(d)
    if r is None:
      rows.append(f"| {NAMES[d]} | — | — | not run | — | — | {PAPER_DISTILLED[d] / 100:.2f} |")
      continue
    rows.append(f"| {NAMES[d]} | {r['n_per_class']} | {r['inner_steps']} | {mean_std(r['distilled'])} | "
                f"{mean_std(r.get('random_subset'))} | {mean_std(r.get('decoded_cosine'))} | "
                f"{PAPER_DISTILLED[d] / 100:.2f} |")
  cmds = [f"- `{name}`: `{r['command']}`" for name, r in runs.items() if "command" in r]
  return "\n".join(rows + ["", "Commands:", *cmds])


TABLES = {"table1": table1, "table2": table2}


def main() -> int:
  path = os.path.join(ROOT, "README.md")
  text = open(path).read()
  for name, fn in TABLES.items():
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if pattern.search(text):
      text = pattern.sub(lambda m: m.group(1) + fn() + "\n" + m.group(2), text)
  open(path, "w").write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
