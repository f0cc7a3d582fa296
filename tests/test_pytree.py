"""pytree.py: parameter names and the first-full-match regex rules behind freezing, multipliers,
sharding and partial loading."""

import collections

import jax.numpy as jnp
import pytest

from big_vision_lite import pytree

Adam = collections.namedtuple("Adam", ["mu", "nu"])
TREE = {"img": {"Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}},
        "txt": {"layers": [jnp.zeros(1), jnp.zeros(2)]}, "t": jnp.zeros(())}


def test_path_names_join_dict_keys_sequence_indices_and_attributes():
  names = [name for name, _ in pytree.named_leaves(TREE)]
  assert names == ["img/Dense_0/bias", "img/Dense_0/kernel", "t", "txt/layers/0", "txt/layers/1"]
  opt = pytree.named_leaves((Adam(mu={"w": jnp.ones(1)}, nu={"w": jnp.ones(1)}),))
  assert [name for name, _ in opt] == ["0/mu/w", "0/nu/w"]
  assert pytree.named_leaves(TREE)[1][1].shape == (2, 3)  # Leaves come with their names.


def test_map_with_names():
  sizes = pytree.map_with_names(lambda name, x: f"{name}:{x.size}", TREE)
  assert sizes["img"]["Dense_0"]["kernel"] == "img/Dense_0/kernel:6"
  assert sizes["txt"]["layers"][1] == "txt/layers/1:2"


def test_match_rules_first_full_match_wins():
  rules = [("img/.*/bias", "bias rule"), ("img/.*", "img rule"), (".*", "any")]
  assert pytree.match_rules(rules, "img/Dense_0/bias") == "bias rule"  # First of three matches.
  assert pytree.match_rules(rules, "img/Dense_0/kernel") == "img rule"
  assert pytree.match_rules(rules, "txt/img/kernel") == "any"  # 'img/.*' must match it all.
  # A regex must match the whole name, not a part of it.
  assert pytree.match_rules([("kernel", 1)], "img/Dense_0/kernel", default=0) == 0
  assert pytree.match_rules([("img", 1)], "img/Dense_0/kernel") is None
  assert pytree.match_rules([(".*kernel", 1)], "img/Dense_0/kernel", default=0) == 1


def test_rule_tree():
  mults = pytree.rule_tree([("img/.*", 0.0), ("t", 2.0)], TREE, default=1.0)
  assert mults == {"img": {"Dense_0": {"kernel": 0.0, "bias": 0.0}},
                   "txt": {"layers": [1.0, 1.0]}, "t": 2.0}


def test_rule_tree_names_a_bad_regex():
  with pytest.raises(ValueError, match=r"bad parameter-name regex 'img/\(\.\*': missing \)"):
    pytree.rule_tree([("txt/.*", 1.0), ("img/(.*", 0.0)], TREE)
