"""Distil, evaluate the checkpoint, and keep one result file for the tables.

The result is `result_evaluate.json` plus the two commands that made it, the
distillation's seconds per outer step (median over logging intervals after the
first, which holds the compile) and its logged curves (`history`: meta-loss,
gradient norm, step sizes, periodic eval accuracy), so every table row and
plot (`scripts/make_plots.py`) can be reproduced and timed.

  python scripts/distill_eval.py --out results/remedies/x.json --run runs/remedies/x \
      [--eval-arg=--config.evaluate.decode=False ...] -- --config=configs/paper.py:sst2 [--config.KEY=VALUE ...]

The config arguments after `--` go to both runs; `--eval-arg`s only to evaluate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seconds_per_step(metrics_path: str) -> float | None:
  rows = [json.loads(l) for l in open(metrics_path) if l.strip()]
  rows = [r for r in rows if "seconds" in r and "step" in r]
  rates = [(b["seconds"] - a["seconds"]) / (b["step"] - a["step"]) for a, b in zip(rows[1:], rows[2:])
           if b["step"] > a["step"]]
  return statistics.median(rates) if rates else None


def host() -> str:
  """CPU model, logical cores and whether it has AVX-512: numbers differ by host class."""
  info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
  model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown")
  return f"{model} × {os.cpu_count()} ({'avx512f' if ' avx512f' in info else 'no avx512f'})"


HISTORY_KEYS = ("step", "meta_loss", "meta_acc", "grad_norm", "lr_mean", "inner_loss_last", "holdout_accuracy")


def history(metrics_path: str) -> list[dict]:
  """The scalar curves of the distillation log, for plots made from result files alone."""
  rows = [json.loads(l) for l in open(metrics_path) if l.strip()]
  return [{k: r[k] for k in HISTORY_KEYS if k in r} for r in rows if len(set(r) & set(HISTORY_KEYS)) > 1]


def run_child(cmd: list[str]) -> None:
  """Runs `cmd` to its end, raising CalledProcessError on a failure.

  Unlike subprocess.run, a Ctrl-C or SIGTERM does not kill the child: it is
  passed on, once, and the child stops at a safe point (a finished step and
  checkpoint, or a finished evaluation part) and says what it kept; this waits
  for it, so the caller still records the attempt's time. The child has a
  session of its own so that a signal to the terminal's or this script's
  process group does not reach it twice (a second one abandons the step).
  """
  with subprocess.Popen(cmd, cwd=ROOT, start_new_session=True) as child:
    forward = lambda signum, frame: child.send_signal(signum)  # pylint: disable=unnecessary-lambda-assignment
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
      child.wait()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
  if child.returncode:
    raise subprocess.CalledProcessError(child.returncode, cmd)


def one_command(args, config_args: list[str]) -> int:
  """The README's quick start as a user runs it: one command, timed whole."""
  shutil.rmtree(os.path.join(ROOT, args.run), ignore_errors=True)
  cmd = [sys.executable, "-m", "distill_jax.main", *config_args, f"--workdir={args.run}"]
  print("==", shlex.join(["python", *cmd[1:]]), flush=True)
  start = time.perf_counter()
  run_child(cmd)
  result = json.load(open(os.path.join(ROOT, args.run, "result_evaluate.json")))
  result.update(command=shlex.join(["python", *cmd[1:]]), total_seconds=time.perf_counter() - start, host=host())
  log = os.path.join(ROOT, args.run, "metrics.jsonl")
  result["seconds_per_outer_step"], result["history"] = seconds_per_step(log), history(log)
  write(args.out, result)
  return 0


# Where each command's attempts are logged: the evaluation's go with RUN/eval, which a fresh start removes.
ATTEMPTS = {"distill": ("attempts.json",), "evaluate": ("eval", "attempts.json")}


def record_attempt(path: str, seconds: float, peak_rss_mib: Optional[float]) -> list[dict]:
  """Appends one command's wall-clock, peak memory (when known) and host to its attempts."""
  attempts = json.load(open(path)) if os.path.exists(path) else []
  attempts.append(dict(seconds=seconds, host=host(), **({} if peak_rss_mib is None else
                                                         dict(peak_rss_mib=peak_rss_mib))))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(attempts, f, indent=2)
  return attempts


def total(attempts: list[dict]) -> float:
  return sum(a["seconds"] for a in attempts)


def write(out: str, result: dict) -> None:
  os.makedirs(os.path.dirname(os.path.join(ROOT, out)), exist_ok=True)
  with open(os.path.join(ROOT, out), "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  print(f"wrote {out}")


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="result JSON to write")
  p.add_argument("--run", required=True, help="run directory (replaced unless --resume): RUN/distill and RUN/eval")
  p.add_argument("--eval-arg", action="append", default=[], help="extra argument for the evaluate run only")
  p.add_argument("--seeds", type=int, default=5, help="evaluation seeds")
  p.add_argument("--resume", action="store_true",
                 help="keep RUN: the distillation continues from its last checkpoint and the evaluation from "
                      "its finished parts (default: start afresh)")
  p.add_argument("--distilled-by", default="",
                 help="evaluate RUN/distill as it is (no distillation) and take its timing from this result file")
  p.add_argument("--one-command", action="store_true",
                 help="time the config's own single command (a recipe: distil, then evaluate.after_distill)")
  args, config_args = p.parse_known_args(argv)
  config_args = [a for a in config_args if a != "--"]
  if args.one_command:
    return one_command(args, [a for a in config_args if a != "--"])
  # The evaluation runs as its own command (timed apart), not as the recipes' after_distill step.
  distill = [*config_args, "--config.evaluate.after_distill=False", f"--workdir={args.run}/distill"]
  evaluate = [*config_args, "--config.mode=evaluate", f"--config.evaluate.checkpoint={args.run}/distill",
              f"--config.evaluate.seeds={args.seeds}", *args.eval_arg, f"--workdir={args.run}/eval"]
  if not args.resume:  # afresh; --resume keeps RUN/eval too, whose finished parts the evaluation reuses
    fresh = os.path.join(args.run, "eval") if args.distilled_by else args.run  # --distilled-by keeps RUN/distill
    shutil.rmtree(os.path.join(ROOT, fresh), ignore_errors=True)
  commands = [[sys.executable, "-m", "distill_jax.main", *a] for a in (distill, evaluate)]
  if args.distilled_by:
    commands = commands[1:]
  attempts = {}
  for cmd in commands:
    print("==", shlex.join(["python", *cmd[1:]]), flush=True)
    start = time.perf_counter()
    try:
      run_child(cmd)
    finally:  # a stopped command's time counts too: --resume continues it
      seconds = time.perf_counter() - start
      # Children run one at a time, so after the first command this is that command's own peak.
      peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if cmd is commands[0] else None
      # The attempts of a command resumed across sessions (--resume) add up.
      name = "evaluate" if cmd is commands[-1] else "distill"
      attempts[name] = record_attempt(os.path.join(ROOT, args.run, *ATTEMPTS[name]), seconds, peak)
  result = json.load(open(os.path.join(ROOT, args.run, "eval", "result_evaluate.json")))
  result["command"] = " && ".join(shlex.join(["python", *cmd[1:]]) for cmd in commands)
  if args.distilled_by:  # the set was distilled by an earlier measured run: its timing, memory and curves
    earlier = json.load(open(os.path.join(ROOT, args.distilled_by)))
    keys = ("distill_seconds", "seconds_per_outer_step", "history", "distill_peak_rss_mib")
    result.update({k: earlier[k] for k in keys if k in earlier}, distilled_by=args.distilled_by,
                  distill_host=earlier.get("host"), evaluate_seconds=total(attempts["evaluate"]))
    result["host"] = host()
    write(args.out, result)
    return 0
  # Wall-clock and peak resident memory of each command (start-up, data, compile and all), and the CPU;
  # a distillation resumed over several attempts (--resume) sums their wall-clock.
  result["distill_seconds"], result["evaluate_seconds"] = total(attempts["distill"]), total(attempts["evaluate"])
  result["distill_peak_rss_mib"] = max(a["peak_rss_mib"] for a in attempts["distill"])
  result["distill_attempts"], result["evaluate_attempts"] = len(attempts["distill"]), len(attempts["evaluate"])
  result["host"] = host()
  log = os.path.join(ROOT, args.run, "distill", "metrics.jsonl")
  result["seconds_per_outer_step"] = seconds_per_step(log)
  result["history"] = history(log)
  write(args.out, result)
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main(sys.argv[1:]))
  except subprocess.CalledProcessError as err:
    print(f"stopped: `{shlex.join(['python', *err.cmd[1:]])}` exited with status {err.returncode} (its last line "
          "says what it kept); the time so far is recorded, and --resume continues from the kept checkpoint and "
          "evaluation parts", file=sys.stderr)
    sys.exit(err.returncode)
