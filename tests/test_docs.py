"""The README and docs/: CI runs the README's test command, and every relative link resolves."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
  with open(os.path.join(ROOT, path)) as f:
    return f.read()


def test_ci_runs_exactly_the_readme_test_command():
  readme = _read("README.md").splitlines()
  test_command = readme[readme.index("# 2. Install and run the test suite (what CI runs, via .ci/run).") + 1]
  ci_commands = [line for line in _read(".ci/run").splitlines()
                 if line.strip() and not line.startswith(("#", "set ", "cd "))]
  assert ci_commands == [test_command]


def test_relative_links_of_the_readme_and_docs_resolve():
  broken = []
  for doc in ["README.md"] + sorted(glob.glob("docs/**/*.md", root_dir=ROOT, recursive=True)):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _read(doc)):
      if "://" not in target and not os.path.exists(
          os.path.join(ROOT, os.path.dirname(doc), target)):
        broken.append(f"{doc}: {target}")
  assert not broken
