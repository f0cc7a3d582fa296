"""Small file operations the entry points share: atomic writes, running a Python file's function."""

import contextlib
import importlib.util
import inspect
import os
import traceback
from typing import Any


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file renamed over it: a reader (or a crash)
  never sees half a file. Creates the directory if needed."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def call_python_file(path: str, function: str, arg: str | None, error: type[Exception],
                     arg_hint: str = "") -> Any:
  """Runs the Python file at `path` and returns `function(arg)` (`function()` without `arg`).
  Raises `error` if the file defines no such function, if `arg` is given to a function that
  takes none (`arg_hint` says what to do instead), or, naming the file and line, if the file or
  the function fails (a syntax error, an exception)."""
  spec = importlib.util.spec_from_file_location(f"_bvl_{function}", path)
  module = importlib.util.module_from_spec(spec)
  with _reported(path, "loading", error):
    spec.loader.exec_module(module)
  if not hasattr(module, function):
    raise error(f"{path} has no {function}(arg) function")
  fn = getattr(module, function)
  if arg and not inspect.signature(fn).parameters:
    raise error(f"{path} takes no argument, but got {arg!r} (after the ':'){arg_hint}")
  with _reported(path, function, error):
    return fn(arg) if arg else fn()


@contextlib.contextmanager
def _reported(path: str, what: str, error: type[Exception]):
  """A Python file that fails (a syntax error, an exception) is an `error` naming the file and
  line, not a traceback."""
  try:
    yield
  except error:
    raise
  except SyntaxError as e:
    raise error(f"{e.filename or path}:{e.lineno}: {e.msg} (a syntax error in the file): fix "
                "that line") from None
  except Exception as e:  # pylint: disable=broad-except
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    where = f"{path}:{frames[-1].lineno}" if frames else path
    raise error(f"{where}: {what} raised {type(e).__name__}: {e}: fix the file (or its "
                "argument)") from None
