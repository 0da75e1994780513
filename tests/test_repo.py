"""Promises about the repository itself."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_ci_runs_exactly_the_readme_install_and_test_commands():
  readme = open(os.path.join(REPO, "README.md")).read()
  blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, re.S))
  readme_cmds = {re.sub(r"\s+#.*", "", l).strip() for l in blocks.splitlines()}
  ci = [l.strip() for l in open(os.path.join(REPO, ".ci", "run"))
        if l.strip() and not l.startswith(("#", "set ", "cd "))]
  assert len(ci) == 3
  assert set(ci) <= readme_cmds, set(ci) - readme_cmds


def test_result_tables_in_the_docs_are_generated_from_the_result_files():
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_tables.py"), "--check"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
