"""Errors a user can fix: entry points print the message (no traceback) and exit with `exit_code`."""

import sys
from typing import Any, Callable


class Error(Exception):
  """A problem whose message names what is wrong and how to fix it."""

  exit_code = 2
  label = "error"  # How the message is introduced when printed.


class ConfigError(Error, ValueError):
  """A config that cannot run; the message names the key and the fix."""


def run(main: Callable[[], Any]) -> Any:
  """Runs an entry point's `main` and returns its result: an Error prints its message (no
  traceback) and exits with its exit code."""
  try:
    return main()
  except Error as e:
    print(f"{e.label}: {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
