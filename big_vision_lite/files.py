"""Small file operations the entry points share: atomic writes, running a Python file's function."""

import importlib.util
import os
from typing import Any


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file renamed over it: a reader (or a crash)
  never sees half a file. Creates the directory if needed."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def call_python_file(path: str, function: str, arg: str | None, error: type[Exception]) -> Any:
  """Runs the Python file at `path` and returns `function(arg)` (`function()` without `arg`);
  raises `error` if the file defines no such function."""
  spec = importlib.util.spec_from_file_location(f"_bvl_{function}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, function):
    raise error(f"{path} has no {function}(arg) function")
  return getattr(module, function)(arg) if arg else getattr(module, function)()
