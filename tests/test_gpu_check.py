"""benchmarks/gpu_check.sh --dry-run: the GPU run's sequence on the CPU, so a lent GPU's few minutes are not spent
finding out that the script is broken."""

from __future__ import annotations

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check(out_dir, python: str) -> tuple[subprocess.CompletedProcess, str, dict[str, str]]:
  proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(out_dir)], cwd=REPO,
                        env=dict(os.environ, PYTHON=python), capture_output=True, text=True, timeout=300)
  report = (out_dir / "gpu.md").read_text()
  statuses = dict(re.findall(r"^\| ([\w-]+) \| (OK|FAIL|TIMEOUT|SKIPPED)\b", report, re.M))
  return proc, report, statuses


def test_dry_run_reports_the_device_and_every_part(tmp_path):
  proc, report, statuses = _check(tmp_path, sys.executable)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  assert re.search(r"^- Device: jax \S+ on cpu \(cpu\) × \d+$", report, re.M)
  assert statuses == {"install": "SKIPPED", "devices": "OK", "parity": "OK", "bench-M2-L8-T2": "OK"}
  assert "missing imports: none" in report
  assert re.search(r"^\d+(/\d+)? tests collected", report, re.M)  # the parity files import and parametrise
  assert re.search(r"^\| M=2 L=8 T=2 real 4×8 \| jax \| [\d.]+ \|", report, re.M)  # the benchmark's own table
  assert "===== bench-M2-L8-T2" in (tmp_path / "gpu.log").read_text()


def test_failing_parts_are_recorded_and_the_run_goes_on(tmp_path):
  proc, report, statuses = _check(tmp_path, "/nonexistent/python3")
  assert proc.returncode == 1
  assert "- Device: unknown" in report
  assert statuses == {"install": "SKIPPED", "devices": "FAIL", "parity": "FAIL", "bench-M2-L8-T2": "FAIL"}
  assert report.count("FAIL (exit 127)") == 3
