"""Rewrites the documentation's generated tables from their sources of truth.

  python -m big_vision_lite.tools.readme_tables [REPOSITORY_ROOT]

Each table sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers in its document:
`config-table` in docs/training.md (every config key, from big_vision_lite/schema.py) and
`pretrained-table` in docs/weights.md (the released models, from big_vision_lite/pretrained.py).
Tests check that the documents match.
"""

import os
import sys
from typing import Callable

from big_vision_lite import pretrained, schema

# Table name -> (its document, relative to the repository root; the function that makes it).
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "config-table": ("docs/training.md", schema.markdown_table),
    "pretrained-table": ("docs/weights.md", pretrained.markdown_table)}


def block(text: str, name: str) -> str:
  """The text between a table's markers."""
  start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
  return text[text.index(start) + len(start):text.index(end)]


def update(root: str = ".") -> list[str]:
  """Rewrites every table under the repository at `root`; returns the names of those that changed."""
  changed = []
  for name, (doc, make) in TABLES.items():
    path = os.path.join(root, doc)
    with open(path) as f:
      text = f.read()
    old = block(text, name)
    if old != make():
      with open(path, "w") as f:
        f.write(text.replace(f"<!-- {name}:start -->\n{old}\n<!-- {name}:end -->",
                             f"<!-- {name}:start -->\n{make()}\n<!-- {name}:end -->"))
      changed.append(f"{doc} ({name})")
  return changed


if __name__ == "__main__":
  changed = update(sys.argv[1] if len(sys.argv) > 1 else ".")
  print(f"rewrote {', '.join(changed)}" if changed else "tables up to date")
