"""Regenerates the generated parts of the docs from the files they report.

Each part sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers in
one of DOCS; nothing inside them is typed by hand. Sources: the result files in
results/ (quick start, recipes, Tables 1 and 2, remedies, diagnosis, ...), the
benchmark reports in benchmarks/results/ and the fault cases of
tests/fault_cases.py. Run `python scripts/make_tables.py`; `--check` only
reports (exit 1) the docs whose generated parts are stale.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shlex
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from references import split_suffix  # noqa: E402  pylint: disable=g-import-not-at-top
from distill_jax.data.registry import get_spec  # noqa: E402  (references put the repo on sys.path)
DATASETS = ("sst2", "rotten_tomatoes", "imdb", "ag_news")
NAMES = {"sst2": "SST-2", "rotten_tomatoes": "Rotten Tomatoes", "imdb": "IMDB",
         "ag_news": "AG News (train test[:6000], eval test[6000:])", "trec": "TREC (eval on test)"}
# The recipes of configs/recipes.py: dataset → its config file; variant → (name, config suffix, by dataset the
# measured run of the recipe's current setting where results/recipes/ has none: runs from before the recipes
# existed, and for SST-2 MiniLM, whose recipe changed later (docs/diagnosis.md section 8), its budget run).
RECIPE_DATASETS = (*DATASETS, "trec")
RECIPE_CONFIGS = {"sst2": "configs/sst2.py", "rotten_tomatoes": "configs/rotten_tomatoes.py",
                  "imdb": "configs/imdb.py", "ag_news": "configs/agnews.py", "trec": "configs/trec.py"}
RECIPES = {
    "minilm": ("MiniLM-L6 1/class", "", {**{d: f"remedies/minilm_{d}" for d in DATASETS},
                                         "sst2": "budgets/sst2_minilm_1pc"}),
    "tiny": ("BERT-Tiny 1/class", ":tiny", {"sst2": "remedies/tiny_superpose_1pc_sst2_300",
                                            "rotten_tomatoes": "remedies/tiny_superpose_1pc_rotten_tomatoes",
                                            "imdb": "remedies/tiny_superpose_1pc_imdb_150",
                                            "ag_news": "remedies/tiny_superpose_1pc_ag_news_300"}),
}
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


def distill_minutes(r: dict) -> float | None:
  """Minutes of the distillation alone: seconds per outer step (compile excluded) × outer steps."""
  if r.get("seconds_per_outer_step"):
    return r["seconds_per_outer_step"] * r["outer_steps"] / 60
  return r["distill_seconds"] / 60 if r.get("distill_seconds") else None


def quickstart() -> str:
  """The quick start's expected result, from results/recipes/quickstart_ag_news.json once it is measured."""
  path = os.path.join(ROOT, "results", "recipes", "quickstart_ag_news.json")
  if not os.path.exists(path):
    out = ["Expected result: not measured yet: run `bash scripts/recipes.sh quickstart`."]
    r = load("remedies/minilm_ag_news.json").get("minilm_ag_news")
    if r:
      out.append(f"The same setting measured earlier (`results/remedies/minilm_ag_news.json`): distilled "
                 f"{mean_std(r['distilled'])}%, random real subset {mean_std(r.get('random_subset'))}%, "
                 f"real-data ceiling {mean_std(r.get('real_ceiling'))}%, after {r['outer_steps']} outer steps "
                 f"that took about {distill_minutes(r):.0f} minutes on 2 CPU cores.")
    return "\n".join(out)
  r = json.load(open(path))
  times = [f"the whole command {r['total_seconds'] / 60:.1f} min"] if r.get("total_seconds") else []
  if r.get("distill_seconds"):
    times.append(f"distillation {r['distill_seconds'] / 60:.0f} min")
  elif distill_minutes(r):
    times.append(f"distillation about {distill_minutes(r):.0f} min")
  if r.get("evaluate_seconds"):
    times.append(f"evaluation {r['evaluate_seconds'] / 60:.0f} min")
  first = r.get("command", "").split(" && ")[0]
  return "\n".join([
      f"Expected (`results/recipes/quickstart_ag_news.json`, {r.get('host', '2 CPU cores')}): distilled "
      f"{mean_std(r['distilled'])}% on {r.get('num_examples', 4)} examples ({r.get('n_per_class', 1)} per class), "
      f"random real subset of the same size "
      f"{mean_std(r.get('random_subset'))}%, real-data ceiling {mean_std(r.get('real_ceiling'))}% "
      f"({r['outer_steps']} outer steps; {', '.join(times) or 'time not recorded'}).",
      *([f"Measured with `{first}`."] if first and len(first) <= 250 else [])])


def reference_name(model: str, dataset: str, split: str = "") -> str:
  """A reference on a split other than the registry's evaluation split is named for it (references.py --eval-split)."""
  return f"{model}_{dataset}" + (split_suffix(split) if split and split != get_spec(dataset).eval_split else "")


def reference_holdout(model: str, dataset: str, split: str = "") -> float | None:
  """The reference's accuracy on the held-out training rows, which distillation's periodic checks also score."""
  name = reference_name(model, dataset, split)
  return load(f"references/{name}.json").get(name, {}).get("holdout_accuracy")


def reference(model: str, dataset: str, split: str = "") -> tuple[float | None, str]:
  """Full-data accuracy of `model` ("minilm" | "tiny") on `split` ("" = the dataset's default) and its mark:
  the held-out-selected reference of results/references/ (no mark), else the older Table 1 run (†: epoch
  picked on the eval split, MiniLM one epoch, SST-2/IMDB on reduced data), else None."""
  name = reference_name(model, dataset, split)
  r = load(f"references/{name}.json").get(name)
  if r or name != f"{model}_{dataset}":
    return (r["eval_accuracy"], "") if r else (None, "")
  r = load(f"table1/{model}_{dataset}.json").get(f"{model}_{dataset}")
  return (r["best_eval_accuracy"], "†") if r else (None, "")


def full_cells(model: str, dataset: str, accuracy: float) -> str:
  """`full data | % of full` table cells."""
  f, mark = reference(model, dataset)
  return f"{pct(f)}{mark} | {100 * accuracy / f:.0f}%" if f else "— | —"


def references_table() -> str:
  """results/references/: learning rate and epoch chosen on held-out training rows, evaluated once."""
  rows = ["| dataset | model | full data (eval split) | learning rate | epoch | held-out | train / held-out / eval rows | "
          "Table 1 run (old protocol) | ran on |", "|---|---|---|---|---|---|---|---|---|"]
  runs = load("references/*.json")
  old = load("table1/*.json")
  for d in RECIPE_DATASETS:
    for model, label in (("minilm", "MiniLM-L6 (pretrained)"), ("tiny", "BERT-Tiny (random init)")):
      base, o = f"{model}_{d}", old.get(f"{model}_{d}")
      prev = pct(o["best_eval_accuracy"]) if o else "—"
      if base not in runs:
        rows.append(f"| {NAMES[d]} | {label} | not measured yet | — | — | — | — | {prev} | — |")
      # The dataset's default split, then references on other splits (references.py --eval-split).
      for name in sorted((n for n in runs if n == base or n.startswith(base + "_")), key=lambda n: n != base):
        r = runs[name]
        split = f" ({r['eval_split']} split)" if name != base else ""
        rows.append(f"| {NAMES[d]}{split} | {label} | {pct(r['eval_accuracy'])} | {r['learning_rate']:g} | "
                    f"{r['best_epoch'] + 1} | {pct(r['holdout_accuracy'])} | "
                    f"{r['train_rows']:,} / {r['holdout_rows']:,} / {r['eval_rows']:,} | "
                    f"{prev if name == base else '—'} | {'; '.join(r.get('hosts', [r.get('host', '?')]))} |")
  note = lambda r: f" ({r['note']})" if r.get("note") else ""
  cmds = [f"- `{n}`: `{r['grid_command']}`{note(r)}" for n, r in runs.items()]
  return "\n".join(rows + ["", "Commands (each grid point's own command is in its result file):", *cmds])


BUDGET_ROWS = (("random_subset", "Random"), ("kcenter_subset", "K-Center"), ("herding_subset", "Herding"),
               ("equal_storage_subset", "Random, equal storage"), ("real_ceiling", "Real-data ceiling (T steps)"),
               ("distilled", "**Distilled (ours)**"))


def budgets_table() -> str:
  """The field's table: rows are methods, columns dataset × examples per class (results/budgets/)."""
  runs = load("budgets/*.json")
  order = lambda kv: (RECIPE_DATASETS.index(kv[1]["dataset"]), kv[1]["n_per_class"])
  runs = dict(sorted(runs.items(), key=order))
  if not runs:
    return "Not measured yet: `bash scripts/budgets.sh DATASET K`."
  cols = list(runs.values())
  head = " | ".join(f"{NAMES[r['dataset']].split(' (')[0]} {r['n_per_class']}/class" for r in cols)
  rows = [f"| method | {head} |", "|---|" + "---|" * len(cols)]
  for key, label in BUDGET_ROWS:
    rows.append(f"| {label} | " + " | ".join(mean_std(r.get(key)) for r in cols) + " |")
  full = [reference("minilm", r["dataset"], r["eval_split"]) for r in cols]
  rows.append("| Full data | " + " | ".join(f"{pct(f)}{m}" if f else "—" for f, m in full) + " |")
  rows.append("| Distilled / full | " + " | ".join(f"{100 * r['distilled']['mean'] / f:.0f}%" if f else "—"
                                               for r, (f, _) in zip(cols, full)) + " |")
  rows += ["", "| run | models | outer steps | distillation, min | peak memory, MiB | learned floats | bytes | "
           "/ training token bytes | equal-storage rows | host |", "|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in runs.items():
    st, eq = r["storage"], r.get("equal_storage_subset", {})
    peak = r.get("distill_peak_rss_mib")
    minutes = distill_minutes(r)
    rows.append(f"| `{name}` | {r['distilled']['n']} | {r['outer_steps']} | {f'{minutes:.1f}' if minutes else '—'} | "
                f"{f'{peak:,.0f}' if peak else '—'} | {st['floats']:,} | {st['bytes']:,} | {st['ratio']:.2%} | "
                f"{eq.get('n_examples', '—')} | {r.get('distill_host') or r['host']} |")
  # A set evaluated here but distilled by an earlier measured run: that run's file holds its distillation command.
  earlier = lambda r: f" (the set: `{r['distilled_by']}`)" if r.get("distilled_by") else ""
  return with_commands(rows, runs, suffix=earlier)


def small_sets_table() -> str:
  """results/tiny_small/: BERT-Tiny (random init) sets at about 1% of the training split's token bytes against
  the real-data ceiling of the same steps and real text of the same bytes."""
  runs = load("tiny_small/*.json")
  if not runs:
    return "Not measured yet."
  rows = ["| run | dataset | candidates / position | outer steps | bytes (floats, token ids) | / training token bytes | "
          "distilled | before distillation | real-data ceiling | real text, equal bytes (rows) | Random, same n | "
          "beats the ceiling by |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in runs.items():
    st, eq, ceiling = r["storage"], r.get("equal_storage_subset", {}), r["real_ceiling"]
    margin = 100 * (r["distilled"]["mean"] - ceiling["mean"])
    rows.append(f"| `{name}` | {NAMES[r['dataset']]} | {r['candidates_per_position']} "
                f"({r.get('candidate_choice', 'frequent')}) | {r['outer_steps']} | {st['bytes']:,} "
                f"({st['floats']:,}, {st.get('token_ids', 0):,}) | {st['ratio']:.2%} | {mean_std(r['distilled'])} | "
                f"{mean_std(r.get('initial_set'))} | {mean_std(ceiling)} | {mean_std(eq) if 'mean' in eq else '—'} "
                f"({eq.get('n_examples', '—')}) | {mean_std(r.get('random_subset'))} | {margin:+.2f} |")
  return with_commands(rows, runs)


# Issue 23's targets for the MiniLM-L6 body, judged from results/budgets/ and results/attention/.
FULL_1PC, OVER_KCENTER, OVER_RANDOM_5PC, ATTENTION_AIM = 0.90, 0.03, 0.10, 0.95


# A periodic check within this of the one before reads as level: its models and rows make it no finer.
LEVEL = 0.01
# A pass closer to its line than this many standard errors says by how much: another draw of models could miss.
NARROW = 2.0


def standard_error(r: dict) -> float:
  """Of the distilled mean; std is over the models (ddof 0), so std / √(n − 1)."""
  d = r["distilled"]
  return d["std"] / (d["n"] - 1) ** 0.5 if d["n"] > 1 else 0.0


def passed(r: dict, spare: float) -> str:
  """`pass`, with its margin when that is within `NARROW` standard errors."""
  se = standard_error(r)
  if se and spare < NARROW * se:
    return (f"pass by {100 * spare:.2f} points ({spare / se:.1f} standard errors of the {r['distilled']['n']}-model "
            "mean: a narrow pass)")
  return "pass"


def why_short(r: dict, short: float, held_reference: float | None = None) -> str:
  """The evidence a miss comes with: its size in standard errors of the distilled mean; whether the
  distillation's periodic checks were still rising at its last outer step (a budget cut before its plateau)
  or level within `LEVEL` (a plateau); and, given the reference's accuracy on
  the held-out training rows (all of them; the checks score a random `outer.eval_rows` of them), the
  last check's share of it (the shortfall where the eval split's own distribution plays no part)."""
  se = standard_error(r)
  notes = [f"{short / se:.1f} standard errors of the {r['distilled']['n']}-model mean"] if se else []
  checks = [(h["step"], h[k], rows) for h in r.get("history", []) for k, rows in
            (("holdout_accuracy", "held-out training rows"), ("eval_accuracy", "eval-split rows")) if k in h]
  if len(checks) >= 2:
    (s0, a0, _), (s1, a1, rows) = checks[-2:]
    trend = "still rising at" if a1 - a0 >= LEVEL else f"level (within {pct(LEVEL)} point) over"
    notes.append(f"its checks on {rows} {trend} the last outer steps ({pct(a0)} → {pct(a1)}, steps {s0} → {s1})")
    if held_reference and rows == "held-out training rows":
      notes.append(f"on held-out rows {pct(a1)} of the reference's {pct(held_reference)} = {100 * a1 / held_reference:.1f}%")
  return f" ({'; '.join(notes)})" if notes else ""


def targets_table() -> str:
  """Pass or miss (and by how much) for every target cell; unmeasured cells say the command that fills them."""
  runs, attention = load("budgets/*.json"), load("attention/*.json")
  todo = lambda d, k: f"not measured yet (`bash scripts/budgets.sh {d} {k}`) | —"
  rows = ["| target | dataset, budget | measured | verdict |", "|---|---|---|---|"]

  def share_of_full(label: str, r: dict | None, need: float, missing: str) -> None:
    if not r:
      rows.append(f"| {label} | {missing} |")
      return
    f, mark = reference("minilm", r["dataset"], r["eval_split"])
    if not f:
      rows.append(f"| {label} | {mean_std(r['distilled'])}, no full-data reference on {r['eval_split']} yet | — |")
      return
    got = r["distilled"]["mean"]
    verdict = passed(r, got - need * f) if got >= need * f else (
        f"miss by {100 * (need * f - got):.2f} points"
        f"{why_short(r, need * f - got, reference_holdout('minilm', r['dataset'], r['eval_split']))}")
    rows.append(f"| {label} | {pct(got)} of {pct(f)}{mark} = {100 * got / f:.1f}% | {verdict} |")

  def margin(label: str, r: dict | None, key: str, need: float, d: str, k: int) -> None:
    if not r:
      rows.append(f"| {label} | {todo(d, k)} |")
      return
    gap = r["distilled"]["mean"] - r[key]["mean"]
    verdict = (passed(r, gap - need) if gap >= need
               else f"miss by {100 * (need - gap):.2f} points{why_short(r, need - gap)}")
    rows.append(f"| {label} | {pct(r['distilled']['mean'])} − {pct(r[key]['mean'])} = {100 * gap:+.2f} | {verdict} |")

  for d in RECIPE_DATASETS:
    share_of_full(f"1/class ≥ {FULL_1PC:.0%} of full | {NAMES[d]} 1/class", runs.get(f"{d}_minilm_1pc"), FULL_1PC,
                  todo(d, 1))
  for d in ("sst2", "rotten_tomatoes"):
    for k in (5, 10, 20):
      margin(f"≥ {100 * OVER_KCENTER:.0f} points over K-Center | {NAMES[d]} {k}/class", runs.get(f"{d}_minilm_{k}pc"),
             "kcenter_subset", OVER_KCENTER, d, k)
  for d in RECIPE_DATASETS:
    margin(f"≥ {100 * OVER_RANDOM_5PC:.0f} points over Random | {NAMES[d]} 5/class", runs.get(f"{d}_minilm_5pc"),
           "random_subset", OVER_RANDOM_5PC, d, 5)
  for d in ("ag_news", "sst2"):
    share_of_full(f"aim: attention labels ≥ {ATTENTION_AIM:.0%} of full | {NAMES[d]} 1/class",
                  attention.get(f"{d}_minilm_1pc"), ATTENTION_AIM, "not measured yet | —")
  return "\n".join(rows)


# The run without attention labels of the same recipe, where results/budgets/<run>.json is not: SST-2's recipe
# changed after its attention run (docs/diagnosis.md section 8).
ATTENTION_BASE = {"sst2_minilm_1pc": "diagnosis/budget_sst2_minilm_1pc_before_long17"}


def attention_table() -> str:
  """results/attention/<run>.json (attention labels) against the same recipe without (ATTENTION_BASE, else
  results/budgets/<run>.json)."""
  runs = load("attention/*.json")
  if not runs:
    return "Not measured yet."
  rows = ["| dataset | n/class | outer steps | without attention labels | with attention labels | gain, points | "
          "% of full (without → with) | teacher | λ | learned floats (without → with) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in runs.items():
    base_name = ATTENTION_BASE.get(name, f"budgets/{name}")
    base = load(f"{base_name}.json").get(os.path.basename(base_name))
    f, mark = reference("minilm", r["dataset"])
    share = lambda x: f"{100 * x['distilled']['mean'] / f:.0f}%" if f and x else "—"
    gain = f"{100 * (r['distilled']['mean'] - base['distilled']['mean']):+.2f}" if base else "—"
    floats = f"{base['storage']['floats']:,} → " if base else ""
    rows.append(f"| {NAMES[r['dataset']]} | {r['n_per_class']} | {r['outer_steps']} | "
                f"{mean_std(base['distilled']) if base else 'not measured'} | {mean_std(r['distilled'])} | {gain} | "
                f"{share(base)} → {share(r)} (full {pct(f) if f else '—'}{mark}) | "
                f"{r.get('attention_teacher') or 'θ0'} | {r.get('attention_weight', '—')} | "
                f"{floats}{r['storage']['floats']:,} |")
  return with_commands(rows, runs)


def recipes_table() -> str:
  """One row per dataset and recipe: a results/recipes/ run of the recipe when one exists (for AG News
  MiniLM, the quick start's), else the measured run of its current setting (RECIPES). Larger
  budgets are the budget table's (results/budgets/), measured with coresets beside them."""
  rows = ["| dataset | recipe | outer steps | distilled | random real subset | real-data ceiling | models | "
          "full data | % of full | distillation, min | result file |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for d in RECIPE_DATASETS:
    for variant, (label, suffix, earlier) in RECIPES.items():
      names = [f"recipes/{d}_{variant}", *(["recipes/quickstart_ag_news"] if (d, variant) == ("ag_news", "minilm")
                                          else []), *([earlier[d]] if d in earlier else [])]
      found = [(n, load(f"{n}.json").get(os.path.basename(n))) for n in names]
      name, r = next(((n, r) for n, r in found if r is not None), (None, None))
      recipe = f"{label} (`{RECIPE_CONFIGS[d]}{suffix}`)"
      if r is None:
        rows.append(f"| {NAMES[d]} | {recipe} | — | not measured yet | — | — | — | — | — | — | — |")
        continue
      minutes = distill_minutes(r)
      rows.append(f"| {NAMES[d]} | {recipe} | {r['outer_steps']} | {mean_std(r['distilled'])} | "
                  f"{mean_std(r.get('random_subset'))} | {mean_std(r.get('real_ceiling'))} | "
                  f"{r['distilled']['n']} | {full_cells(variant, d, r['distilled']['mean'])} | "
                  f"{f'{minutes:.0f}' if minutes else '—'} | `{name}.json` |")
  return "\n".join(rows)


def faults_table() -> str:
  """tests/fault_cases.py's FAULTS (plain data, loaded by path): each case's fault, what the user sees, what is kept."""
  spec = importlib.util.spec_from_file_location("fault_cases", os.path.join(ROOT, "tests", "fault_cases.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cell = lambda text: " ".join(text.split()).replace("|", "\\|")
  rows = ["| fault | what you see | what is kept |", "|---|---|---|"]
  rows += [f"| {cell(c['fault'])} | {cell(c['sees'])} | {cell(c['kept'])} |" for c in module.FAULTS.values()]
  return "\n".join(rows)


def with_commands(rows: list[str], runs: dict[str, dict], named: bool = True,
                  title: str = "Commands:", suffix=lambda r: "") -> str:
  """The table, then the command that made each result file (so every row can be rerun)."""
  cmds = [f"- {f'`{name}`: ' if named else ''}`{r['command']}`{suffix(r)}" for name, r in runs.items()
          if "command" in r]
  return "\n".join(rows + ["", title, *cmds])


def table1() -> str:
  runs = load("table1/*.json")
  rows = ["| dataset | BERT-Tiny, random init (ours) | paper's BERT-Tiny (pretrained) | MiniLM-L6, pretrained (ours) |",
          "|---|---|---|---|"]
  for d in DATASETS:
    tiny, mini = runs.get(f"tiny_{d}"), runs.get(f"minilm_{d}")
    rows.append(f"| {NAMES[d]} | {pct(tiny['best_eval_accuracy']) if tiny else '—'} | {PAPER_TINY[d]} | "
                f"{pct(mini['best_eval_accuracy']) if mini else '—'} |")
  return with_commands(rows, runs, title="Commands (each via `bash scripts/table1.sh NAME`):",
                       suffix=lambda r: f" (best of {len(r['eval_accuracy_per_epoch'])} epochs)")


def table2() -> str:
  runs = load("table2/*.json")
  rows = ["| dataset | n/class | T | distilled (ours) | random real subset | real-data ceiling (T steps, batch 64) "
          "| decoded (cosine) | paper's distilled |",
          "|---|---|---|---|---|---|---|---|"]
  for d in DATASETS:
    r = runs.get(d)
    if r is None:
      rows.append(f"| {NAMES[d]} | — | — | not run | — | — | — | {PAPER_DISTILLED[d]} |")
      continue
    rows.append(f"| {NAMES[d]} | {r['n_per_class']} | {r['inner_steps']} | {mean_std(r['distilled'])} | "
                f"{mean_std(r.get('random_subset'))} | {mean_std(r.get('real_ceiling'))} | "
                f"{mean_std(r.get('decoded_cosine'))} | {PAPER_DISTILLED[d]} |")
  return with_commands(rows, runs)


def pooling_note(pooling: str | None) -> str:
  """Suffix for runs whose classifier reads the mean of all states (model.pooling); none for [CLS]."""
  return ", mean pooling" if pooling == "mean" else ""


def superpose_note(k: int, candidates: int = 0) -> str:
  """Suffix for token sets whose examples each started as k superposed real examples (synthetic.superpose),
  stored sparsely as `candidates` tokens per position (synthetic.candidates_per_position)."""
  return (f", each from {k} superposed real examples" if k > 1 else "") + \
      (f", {candidates} candidates per position" if candidates else "")


def describe_init(r: dict) -> str:
  """Model and θ0 distribution of a ceiling result, with what happens to the word-embedding table."""
  if r["model"].get("pretrained"):
    return "pretrained"
  table = "fixed word table" if r["init"].get("fixed_word_embeddings") else "fresh word table"
  if r.get("word_table") == "frozen":
    table += ", frozen in training"
  return f"BERT-{r['model']['size']}, random init, {table}{pooling_note(r['model'].get('pooling'))}"


def ceiling_table() -> str:
  rows = ["| dataset | model / θ0 | inner optimizer | T | accuracy after T steps on real minibatches of 64 | step size |",
          "|---|---|---|---|---|---|"]
  for name, r in load("diagnosis/ceiling_*.json").items():
    model = describe_init(r)
    for row in r["rows"]:
      rows.append(f"| {r['dataset']} | {model} | {'momentum SGD' if row['optimizer'] == 'sgd' else 'Adam'} | "
                  f"{row['steps']} | {mean_std(row)} | {row['lr']:g} |")
  return with_commands(rows, load("diagnosis/ceiling_*.json"), named=False)


def gradient_table() -> str:
  rows = ["| θ0 distribution | ‖g‖ per θ0 sample | ‖mean g‖ | mean pairwise cosine between samples |",
          "|---|---|---|---|"]
  runs = load("diagnosis/gradients_*.json")
  for name, r in runs.items():
    for variant, v in r.items():
      if variant == "command":
        continue
      rows.append(f"| {variant} ({name.split('_', 1)[1]}) | {v['norm_mean']:.3g} ± {v['norm_std']:.2g} | "
                  f"{v['norm_of_mean']:.3g} | {v['cosine_mean']:.3f} ± {v['cosine_std']:.3f} |")
  return with_commands(rows, runs, named=False)


def pooling_table() -> str:
  rows = ["| dataset | model / θ0 | θ0 samples × sentences | [CLS] state | mean of all states |", "|---|---|---|---|---|"]
  runs = load("diagnosis/pooling_*.json")
  for name, r in runs.items():
    s = r["relative_spread"]
    rows.append(f"| {r['dataset']} | {describe_init(r)} | {s['cls']['samples']} × {r['sentences']} | "
                f"{s['cls']['mean']:.4f} ± {s['cls']['std']:.4f} | {s['mean']['mean']:.4f} ± {s['mean']['std']:.4f} |")
  return with_commands(rows, runs, named=False)


def coverage_table() -> str:
  rows = ["| dataset | model / θ0 | inner optimizer, T | training set | sentences | accuracy | step size |",
          "|---|---|---|---|---|---|---|"]
  runs = load("diagnosis/coverage_*.json")
  for name, r in runs.items():
    head = f"| {r['dataset']} | {describe_init(r)} | {'Adam' if r['inner_optimizer'] == 'adam' else 'momentum SGD'}, {r['inner_steps']} |"
    for row in r["subsets"]:
      what = f"real, {row['per_class'] or 'all'} per class, minibatches of 64"
      rows.append(f"{head} {what} | {row['sentences']:,} | {mean_std(row)} | {row['lr']:g} |")
    for row in r["superposed"]:
      what = (f"{r['n_per_class']} per class, each superposing {row['superpose']} real examples, whole set per step"
              if row["superpose"] > 1 else f"real, {r['n_per_class']} per class, whole set per step")
      rows.append(f"{head} {what} | {row['sentences']:,} | {mean_std(row)} | {row['lr']:g} |")
  return with_commands(rows, runs, named=False)


def checks_table() -> str:
  """Runs' kept checkpoints re-scored on the rows their periodic checks scored (file order) and on random rows."""
  runs = load("diagnosis/checks_*.json")
  rows = ["| run | dataset | outer step | check as recorded | first held-out rows, file order (per class) | "
          "as many random held-out rows (per class) | all held-out rows | eval split | models |",
          "|---|---|---|---|---|---|---|---|---|"]
  for name, r in runs.items():
    counts = {k: " / ".join(map(str, v)) for k, v in r["class_counts"].items()}
    for s in r["steps"]:
      check = pct(s["recorded_check"]) if s["recorded_check"] is not None else "—"
      rows.append(f"| `{r['run']}` | {NAMES[r['dataset']]} | {s['step']} | {check} | "
                  f"{mean_std(s['file_order_prefix'])} ({r['rows']}: {counts['file_order_prefix']}) | "
                  f"{mean_std(s['random_prefix'])} ({counts['random_prefix']}) | {mean_std(s['all_holdout'])} | "
                  f"{mean_std(s['eval_split'])} ({r['eval_split']}) | {s['eval_split']['n']} |")
  return with_commands(rows, runs, named=False)


def lengths_table() -> str:
  """Runs' kept checkpoints scored on held-out training rows (and the eval split) by token-count bucket; the
  rows of at least `long_rows` tokens (the largest outer.real_min_tokens among the runs: the rows its meta-loss
  scores) combined per model (the same θ0 score every bucket)."""
  runs = load("diagnosis/lengths_*.json")
  long_rows = max(r["outer"].get("real_min_tokens", 0) for r in runs.values())
  bounds = next(iter(runs.values()))["bounds"]
  assert all(r["bounds"] == bounds for r in runs.values()), "one table needs one set of buckets"
  buckets = [f"{lo + 1}-{hi}" for lo, hi in zip(bounds[:-1], bounds[1:])]
  rows = ["| run | outer.lr | outer.real_min_tokens | outer step | rows | "
          + " | ".join(f"{b} tokens" for b in buckets) + f" | {long_rows} tokens or more | all | models |",
          "|---" * (len(buckets) + 8) + "|"]
  for name, r in runs.items():
    for split in ("holdout", "eval"):
      if split not in r["class_counts"]:
        continue
      keys = [f"{split}_{b}" for b in buckets]
      long = [k for k, lo in zip(keys, bounds[:-1]) if lo + 1 >= long_rows and k in r["class_counts"]]
      sizes = [sum(r["class_counts"][k]) for k in long]
      for s in r["steps"]:
        accs = [sum(a * n for a, n in zip(seed, sizes)) / sum(sizes) for seed in zip(*(s[k]["accs"] for k in long))]
        combined = dict(mean=statistics.fmean(accs), std=statistics.pstdev(accs))  # as evaluate.summary (np.std)
        cells = [f"{mean_std(s[k])} ({sum(r['class_counts'][k])})" if k in s else "—" for k in keys]
        what = "held-out training" if split == "holdout" else r["eval_split"]
        rows.append(f"| `{r['run']}` | {r['outer']['lr']:g} | {r['outer'].get('real_min_tokens', 0)} | {s['step']} | "
                    f"{what} | {' | '.join(cells)} | {mean_std(combined)} ({sum(sizes)}) | {mean_std(s[split])} | {s[split]['n']} |")
  return with_commands(rows, runs, named=False)


SET_KINDS = {"direct": "embeddings", "addressable": "addressable", "tokens": "token distributions"}


def remedies_table() -> str:
  rows = ["| run | dataset | n/class | T | inner opt | θ0 | set | learned floats | outer steps | distilled | "
          "set before distillation | random real subset | real-data ceiling (T steps, batch 64) | full data (Table 1) | "
          "distilled / full |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  runs = load("remedies/*.json")
  full = load("table1/*.json")
  for name, r in runs.items():
    # Full-data accuracy of the same model family: MiniLM for a pretrained θ0, BERT-Tiny otherwise.
    f = full.get(f"{'minilm' if r['init_kind'] == 'pretrained' else 'tiny'}_{r['dataset']}")
    f = f["best_eval_accuracy"] if f else None
    ratio = f"{100 * r['distilled']['mean'] / f:.0f}%" if f else "—"
    rows.append(f"| {name} | {r['dataset']} | {r['n_per_class']} | {r['inner_steps']} | {r.get('inner_optimizer', '?')} | "
                f"{r['init_kind']}{pooling_note(r.get('pooling'))} | {SET_KINDS[r.get('synthetic_kind', 'direct')]}{superpose_note(r.get('superpose', 1), r.get('candidates_per_position', 0))} | "
                f"{r['storage_floats']:,} | {r['outer_steps']} | "
                f"{mean_std(r['distilled'])} | {mean_std(r.get('initial_set'))} | {mean_std(r.get('random_subset'))} | "
                f"{mean_std(r.get('real_ceiling'))} | {pct(f) if f else '—'} | {ratio} |")
  return with_commands(rows, runs)


def sensitivity_table() -> str:
  """One setting changed at a time from the MiniLM SST-2 remedy (scripts/sensitivity.sh), equal short budget."""
  runs = load("sensitivity/*.json")
  config_args = lambda r: [t for t in shlex.split(r["command"].split(" && ")[0]) if t.startswith("--config.")]
  base = set(config_args(runs["base"])) if "base" in runs else set()
  rows = ["| variant | change from `base` | outer steps | distilled (5 heads) | final meta-loss (mean of last 3 logs) | "
          "s / outer step |", "|---|---|---|---|---|---|"]
  for name, r in runs.items():
    change = " ".join(f"`{t}`" for t in config_args(r) if t not in base) or "—"
    losses = [h["meta_loss"] for h in r["history"] if "meta_loss" in h][-3:]
    rows.append(f"| {name} | {change} | {r['outer_steps']} | {mean_std(r['distilled'])} | "
                f"{sum(losses) / len(losses):.3f} | {r['seconds_per_outer_step']:.1f} |")
  return with_commands(rows, runs)


def addressable_table() -> str:
  rows = ["| θ0 | dataset | parametrisation | examples | learned floats (storage) | distilled | s / outer step |",
          "|---|---|---|---|---|---|---|"]
  runs = load("addressable/*.json")
  order = lambda item: (item[1]["init_kind"], DATASETS.index(item[1]["dataset"]), item[1]["synthetic_kind"] != "direct")
  runs = dict(sorted(runs.items(), key=order))
  for name, r in runs.items():
    rows.append(f"| {r['init_kind']} | {NAMES[r['dataset']]} | {r['synthetic_kind']} | {r['num_examples']} | "
                f"{r['storage_floats']:,} | {mean_std(r['distilled'])} | "
                f"{r['seconds_per_outer_step']:.2f} |")
  return with_commands(rows, runs)


# The outer-step reports of bench_outer.py, one per host class (outer_no_malloc_thp.md is an allocator ablation).
HOST_REPORTS = ("outer.md", "outer_intel_avx512_amx.md", "outer_emulated_avx2.md")
BENCH_CONFIGS = ("M=4 L=32 T=10", "M=20 L=64 T=30", "M=40 L=64 T=100")


def host_classes_table() -> str:
  """Float32 JAX against the PyTorch reference per host class, from each report's speed-up table."""
  rows = ["| report | CPU | ISA caps in force | float32 matmul peak, GFLOP/s | "
          + " | ".join(f"{c}: JAX speed-up" for c in BENCH_CONFIGS) + " | ≥ 1.5× |", "|---|" + "---|" * (4 + len(BENCH_CONFIGS))]
  for name in HOST_REPORTS:
    path = os.path.join(ROOT, "benchmarks", "results", name)
    if not os.path.exists(path):
      continue
    lines = open(path).read().splitlines()
    field = lambda key: next((l.split(": ", 1)[1] for l in lines if l.startswith(f"- {key}")), "")
    cpu = field("CPU").split("; load")[0]
    peak = re.findall(r"(jax|torch) ([\d.]+) GFLOP/s", field("Float32 matmul peak"))
    flags = field("Flags in force")
    caps = [c for c in re.findall(r"(\w+=[^,;\s]+)", flags.split("; ", 1)[-1]) if not c.endswith("=unset")]
    caps += re.findall(r"--xla_cpu_max_isa=\w+", flags)
    speed = {}
    for l in lines:
      cells = [c.strip() for c in l.strip("|").split("|")]
      if len(cells) > 5 and cells[1] == "jax" and cells[5].endswith("×"):
        speed[next((c for c in BENCH_CONFIGS if cells[0].startswith(c)), cells[0])] = float(cells[5][:-1])
    met = sum(v >= 1.5 for v in speed.values())
    rows.append(f"| `{name}` | {cpu} | {', '.join(caps) or ('none' if flags else 'not recorded')} | "
                f"{', '.join(f'{fw} {v}' for fw, v in peak)} | "
                + " | ".join(f"{speed[c]:.2f}×" if c in speed else "—" for c in BENCH_CONFIGS)
                + f" | {met} of {len(speed)} |")
  return "\n".join(rows)


def benchmark_table() -> str:
  """The tables and the reproduction lines of the committed benchmark reports, verbatim."""
  out = []
  for name in (*HOST_REPORTS, "outer_no_malloc_thp.md", "agreement.md", "sweep_T.md", "sweep_T_segments.md"):
    path = os.path.join(ROOT, "benchmarks", "results", name)
    if not os.path.exists(path):
      continue
    lines = open(path).read().splitlines()
    keep = [l for l in lines if l.startswith(("|", "Target", "- Command", "- Date", "- CPU", "- Devices", "- Allocator", "- Float32"))]
    out += [f"From `benchmarks/results/{name}`:", ""]
    for i, l in enumerate(keep):  # a blank line before each table header and after each table
      header = i + 1 < len(keep) and keep[i + 1].startswith("|---")
      if out and out[-1] and (header or (out[-1].startswith("|") and not l.startswith("|"))):
        out.append("")
      out.append(l)
    out.append("")
  return "\n".join(out).rstrip()


TABLES = {"quickstart": quickstart, "recipes": recipes_table, "references": references_table,
          "budgets": budgets_table, "targets": targets_table, "attention": attention_table, "small_sets": small_sets_table, "faults": faults_table, "table1": table1, "table2": table2, "ceiling": ceiling_table, "gradients": gradient_table,
          "pooling": pooling_table, "coverage": coverage_table, "checks": checks_table,
          "lengths": lengths_table,
          "remedies": remedies_table, "sensitivity": sensitivity_table,
          "addressable": addressable_table, "benchmark": benchmark_table,
          "host_classes": host_classes_table}
DOCS = ("README.md", "docs/results.md", "docs/diagnosis.md", "docs/troubleshooting.md", "benchmarks/README.md")


def main(argv: list[str]) -> int:
  """Rewrites the tables in place; with --check, only reports (exit 1) docs whose tables are stale."""
  check = "--check" in argv
  stale = []
  for doc in DOCS:
    path = os.path.join(ROOT, doc)
    old = text = open(path).read()
    for name, fn in TABLES.items():
      pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
      if pattern.search(text):
        text = pattern.sub(lambda m: m.group(1) + fn() + "\n" + m.group(2), text)
    if text != old:
      stale.append(doc)
      if not check:
        open(path, "w").write(text)
  if check and stale:
    print(f"tables out of date in {', '.join(stale)}: run python scripts/make_tables.py")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
