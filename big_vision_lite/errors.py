"""Errors a user can fix: entry points print the message (no traceback) and exit with `exit_code`."""


class Error(Exception):
  """A problem whose message names what is wrong and how to fix it."""

  exit_code = 2
  label = "error"  # How the message is introduced when printed.


class ConfigError(Error, ValueError):
  """A config that cannot run; the message names the key and the fix."""
