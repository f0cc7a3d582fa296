"""Rewrites the README's generated tables from their sources of truth.

  python -m big_vision_lite.tools.readme_tables [README.md]

Each table sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers: `config-table`
(every config key, from big_vision_lite/schema.py) and `pretrained-table` (the released models,
from big_vision_lite/pretrained.py). Tests check that the README matches.
"""

import sys
from typing import Callable

from big_vision_lite import pretrained, schema

TABLES: dict[str, Callable[[], str]] = {"config-table": schema.markdown_table,
                                        "pretrained-table": pretrained.markdown_table}


def block(text: str, name: str) -> str:
  """The text between a table's markers."""
  start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
  return text[text.index(start) + len(start):text.index(end)]


def update(path: str) -> list[str]:
  """Rewrites every table of the README at `path`; returns the names of those that changed."""
  with open(path) as f:
    text = f.read()
  changed = []
  for name, make in TABLES.items():
    old = block(text, name)
    if old != make():
      text = text.replace(f"<!-- {name}:start -->\n{old}\n<!-- {name}:end -->",
                          f"<!-- {name}:start -->\n{make()}\n<!-- {name}:end -->")
      changed.append(name)
  if changed:
    with open(path, "w") as f:
      f.write(text)
  return changed


if __name__ == "__main__":
  readme = sys.argv[1] if len(sys.argv) > 1 else "README.md"
  changed = update(readme)
  print(f"{readme}: rewrote {', '.join(changed)}" if changed else f"{readme}: up to date")
