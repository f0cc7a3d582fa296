"""Parameter-name helpers: the one regex mechanism behind freezing, lr/wd multipliers,
sharding rules and partial checkpoint loading.

A parameter's name is its path joined by '/', e.g. `img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel`.
Rules are a sequence of (regex, value); the first regex that fully matches a name wins.
"""

import re
from typing import Any, Sequence

import jax
from flax import traverse_util


def path_name(path) -> str:
  """A jax key path -> 'a/b/c'."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def named_leaves(tree) -> list[tuple[str, Any]]:
  """[(name, leaf)] in tree order."""
  return [(path_name(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def map_with_names(fn, tree):
  """Like jax.tree.map, but `fn(name, leaf)`."""
  return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_name(p), x), tree)


def match_rules(rules: Sequence[tuple[str, Any]], name: str, default: Any = None) -> Any:
  """The value of the first rule whose regex fully matches `name`, else `default`."""
  for pattern, value in rules:
    if re.fullmatch(pattern, name):
      return value
  return default


def rule_tree(rules: Sequence[tuple[str, Any]], tree, default: Any = None):
  """A tree like `tree` whose leaves are the matching rule values."""
  for pattern, _ in rules:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"bad parameter-name regex {pattern!r}: {e}") from None
  return map_with_names(lambda name, _: match_rules(rules, name, default), tree)


def partition(tree: dict, mask: dict) -> tuple[dict, dict]:
  """(the leaves where `mask` is True, the others): two nested dicts without empty branches."""
  flat, keep = traverse_util.flatten_dict(tree), traverse_util.flatten_dict(mask)
  chosen = {k: v for k, v in flat.items() if keep[k]}
  rest = {k: v for k, v in flat.items() if not keep[k]}
  return traverse_util.unflatten_dict(chosen), traverse_util.unflatten_dict(rest)


def merge(*trees: dict) -> dict:
  """The union of nested dicts with disjoint leaves (the inverse of `partition`)."""
  flat = {}
  for tree in trees:
    for key, value in traverse_util.flatten_dict(tree).items():
      if key in flat:
        raise ValueError(f"merge: {'/'.join(map(str, key))} is in two trees")
      flat[key] = value
  return traverse_util.unflatten_dict(flat)
