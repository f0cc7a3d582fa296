"""Device mesh and parameter shardings.

`config.mesh` lists (axis name, size) pairs, one size may be -1 (all remaining devices), e.g.
`[('data', -1)]` (data parallel, the default) or `[('data', 4), ('fsdp', 2)]`. The batch is split
over every mesh axis. `config.sharding_rules` are (regex, axis or None) rules over parameter names
(pytree.py): a matching parameter is split over that axis along its largest dimension divisible by
the axis size, or replicated for None; unmatched parameters are replicated.
"""

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from big_vision_lite import pytree
from big_vision_lite.errors import ConfigError


def make_mesh(axes: Sequence[tuple[str, int]] = (("data", -1),), devices=None) -> Mesh:
  """A mesh over `devices` (default: all) with the given axis names and sizes."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  names = [name for name, _ in axes]
  sizes = [size for _, size in axes]
  if sizes.count(-1) > 1:
    raise ConfigError(f"config.mesh {list(axes)}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if devices.size % known:
      raise ConfigError(f"config.mesh {list(axes)} does not divide {devices.size} devices")
    sizes[sizes.index(-1)] = devices.size // known
  if int(np.prod(sizes)) != devices.size:
    raise ConfigError(f"config.mesh {list(axes)} has {int(np.prod(sizes))} slots for "
                      f"{devices.size} devices; make the sizes multiply to {devices.size}")
  return Mesh(devices.reshape(sizes), names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over all mesh axes."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def spec_for(shape: Sequence[int], axis: str | None, mesh: Mesh) -> P:
  """Shards the largest dimension divisible by the axis size; replicates if none is."""
  if axis is None:
    return P()
  if axis not in mesh.shape:
    raise ConfigError(f"sharding rule names axis {axis!r}, not in the mesh {dict(mesh.shape)}")
  n = mesh.shape[axis]
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0 and shape[dim] >= n:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def param_specs(mesh: Mesh, abstract_params, rules: Sequence[tuple[str, str | None]] = ()):
  """{param name: PartitionSpec} from the sharding rules."""
  return {name: spec_for(np.shape(x), pytree.match_rules(rules, name), mesh)
          for name, x in pytree.named_leaves(abstract_params)}


def state_shardings(mesh: Mesh, abstract_state, abstract_params,
                    rules: Sequence[tuple[str, str | None]] = ()):
  """NamedShardings for a train state whose leaves include parameters and optimiser moments.

  A leaf whose name ends in a parameter's name (`params/img/...`, `opt/0/mu/img/...`) and has its
  shape takes that parameter's spec; everything else (step counters) is replicated.
  """
  specs = param_specs(mesh, abstract_params, rules)
  shapes = {name: np.shape(x) for name, x in pytree.named_leaves(abstract_params)}

  def leaf_sharding(name, x):
    parts = name.split("/")
    for i in range(len(parts)):
      suffix = "/".join(parts[i:])
      if suffix in specs and shapes[suffix] == np.shape(x):
        return NamedSharding(mesh, specs[suffix])
    return replicated(mesh)

  return pytree.map_with_names(leaf_sharding, abstract_state)


def shardings_of(tree):
  """The sharding of every jax.Array leaf of `tree`."""
  return jax.tree.map(lambda x: x.sharding, tree)
