"""Mesh construction and name-rule shardings."""

import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from big_vision_lite import sharding
from big_vision_lite.errors import ConfigError


def test_mesh_fills_minus_one():
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 2)))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  with pytest.raises(ConfigError, match="slots for 8 devices"):
    sharding.make_mesh((("data", 3),))


def test_spec_shards_largest_divisible_dim():
  mesh = sharding.make_mesh((("data", 4), ("fsdp", 2)))
  assert sharding.spec_for((3, 10, 4), "fsdp", mesh) == P(None, "fsdp", None)
  assert sharding.spec_for((3, 5), "fsdp", mesh) == P()
  assert sharding.spec_for((3, 5), None, mesh) == P()


def test_state_shardings_follow_params_into_optimizer_state():
  mesh = sharding.make_mesh((("data", 4), ("fsdp", 2)))
  params = {"img": {"kernel": jnp.zeros((6, 4))}, "t": jnp.zeros((1,))}
  state = {"params": params, "opt": ({"mu": params}, jnp.zeros((), jnp.int32))}
  out = sharding.state_shardings(mesh, state, params, rules=((".*kernel", "fsdp"),))
  assert out["params"]["img"]["kernel"].spec == P("fsdp", None)
  assert out["opt"][0]["mu"]["img"]["kernel"].spec == P("fsdp", None)
  assert out["params"]["t"].spec == P()
  assert out["opt"][1].spec == P()
