"""Embedding evaluation sets on the mesh, split over processes, each example counted once.

Every process embeds only its own contiguous slice of an evaluation set (`process_range`),
batch by batch; the last batches are padded, the padded rows dropped, and the slices are
gathered back in dataset order on every process, so metrics are computed identically
everywhere from exactly one embedding per example.
"""

import concurrent.futures
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_vision_lite import sharding as sharding_lib
from big_vision_lite.data import loader, ops

REPRESENTATIONS = ("embedding", "pre_logits")


def process_range(n: int, index: int | None = None, count: int | None = None) -> range:
  """This process's contiguous share of `n` examples (shares differ in size by at most one)."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  return range(n * index // count, n * (index + 1) // count)


def gather_rows(local: np.ndarray) -> np.ndarray:
  """Concatenates every process's rows in process order (rows may differ in number)."""
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  counts = multihost_utils.process_allgather(np.int64(len(local)))
  padded = np.zeros((int(counts.max()), *local.shape[1:]), local.dtype)
  padded[:len(local)] = local
  everyone = multihost_utils.process_allgather(padded)  # [processes, max, ...]
  return np.concatenate([everyone[p, :c] for p, c in enumerate(counts)])


def gather_strings(local: Sequence[str]) -> list[str]:
  """Every process's strings in process order."""
  if jax.process_count() == 1:
    return list(local)
  encoded = [s.encode("utf-8") for s in local]
  lengths = gather_rows(np.array([len(b) for b in encoded], np.int64))
  flat = gather_rows(np.frombuffer(b"".join(encoded), np.uint8)).tobytes()
  ends = np.cumsum(lengths)
  return [flat[e - n:e].decode("utf-8") for e, n in zip(ends, lengths)]


class LazyImages:
  """Images of some examples of a random-access source, preprocessed when sliced.

  `source[i]['image']` is run through `pp` (an op function on {'image': ...}); slicing returns
  the stacked images, decoded in a thread pool. A failing example is an error: an evaluation
  set is never silently shortened.
  """

  def __init__(self, source, indices: Sequence[int], pp: Callable, name: str):
    self.source, self.indices, self.pp, self.name = source, list(indices), pp, name
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))

  def __len__(self) -> int:
    return len(self.indices)

  def load(self, index: int) -> np.ndarray:
    try:
      return np.asarray(self.pp({"image": self.source[index]["image"]},
                                np.random.default_rng(index))["image"])
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{self.name}: example {index} cannot be read or preprocessed "
                       f"({type(e).__name__}: {e}); an evaluation set must be complete: "
                       "re-prepare the dataset or choose another split") from e

  def __getitem__(self, item: slice) -> np.ndarray:
    return np.stack(list(self._pool.map(self.load, self.indices[item])))

  @property
  def row_shape(self) -> tuple[int, ...]:
    """The shape of one preprocessed image (from this process's first example, else any)."""
    return self.load(self.indices[0] if self.indices else 0).shape


class Embedder:
  """Runs one tower over this process's rows in global batches on the mesh."""

  def __init__(self, model, mesh, batch_size: int):
    n = mesh.devices.size
    self.batch_size = -(-batch_size // n) * n
    self.sharding = sharding_lib.batch_sharding(mesh)
    out = sharding_lib.replicated(mesh)

    def image(params, x, representation):
      z, _, aux = model.apply({"params": params}, x, None)
      return z if representation == "embedding" else aux["img"]["pre_logits"]

    self._image = jax.jit(image, static_argnums=2, out_shardings=out)
    self._text = jax.jit(lambda p, x: model.apply({"params": p}, None, x)[1], out_shardings=out)

  def _run(self, fn: Callable, local, prep: Callable = lambda x: x) -> np.ndarray:
    """fn(global batch) for the local rows of every process -> all rows in process order."""
    count = jax.process_count()
    rows = self.batch_size // count
    counts = (multihost_utils.process_allgather(np.int64(len(local))) if count > 1
              else np.array([len(local)]))
    row_shape = local.shape[1:] if isinstance(local, np.ndarray) else local.row_shape
    row_dtype = local.dtype if isinstance(local, np.ndarray) else np.uint8

    def load(k: int) -> np.ndarray:  # This process's rows of batch k, zero-padded.
      chunk = local[k * rows:(k + 1) * rows]
      chunk = np.asarray(chunk) if len(chunk) else np.zeros((0, *row_shape), row_dtype)
      pad = np.zeros((rows - len(chunk), *chunk.shape[1:]), chunk.dtype)
      return prep(np.concatenate([chunk, pad]))

    parts: list[list[np.ndarray]] = [[] for _ in range(count)]
    steps = -(-int(counts.max()) // rows)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as prefetch:
      nxt = prefetch.submit(load, 0) if steps else None
      for k in range(steps):
        batch = nxt.result()
        if k + 1 < steps:
          nxt = prefetch.submit(load, k + 1)
        out = np.asarray(fn(loader.to_global({"x": batch}, self.sharding)["x"]))
        for p in range(count):  # Drop every process's padding rows of this batch.
          valid = int(np.clip(counts[p] - k * rows, 0, rows))
          parts[p].append(out[p * rows:p * rows + valid])
    flat = [a for p in parts for a in p]
    return np.concatenate(flat).astype(np.float32) if flat else np.zeros((0, 0), np.float32)

  def images(self, params, local, representation: str = "embedding") -> np.ndarray:
    """This process's images (uint8 [n, H, W, 3] array or LazyImages) -> every process's
    embeddings in process order: L2-normalised [N, E], or the image tower's pre-logits."""
    if representation not in REPRESENTATIONS:
      raise ValueError(f"representation={representation!r} is not one of {REPRESENTATIONS}")
    prep = lambda x: ops.value_range(x) if x.dtype == np.uint8 else x.astype(np.float32)
    return self._run(lambda x: self._image(params, x, representation), local, prep)

  def texts(self, params, local_tokens: np.ndarray) -> np.ndarray:
    """This process's int32 tokens [n, L] -> every process's L2-normalised embeddings [N, E]."""
    return self._run(lambda x: self._text(params, x), local_tokens)


class Evaluator:
  """An evaluation: `embed(params)` -> {name: array} for the whole set on every process,
  `metrics(arrays)` -> {metric: value}."""

  def run(self, params) -> dict[str, float]:
    return self.metrics(self.embed(params))


def local_share(items: Sequence[Any]) -> Sequence[Any]:
  """This process's contiguous share of a sequence every process holds in full."""
  r = process_range(len(items))
  return items[r.start:r.stop]
