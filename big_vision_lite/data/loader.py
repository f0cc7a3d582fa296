"""Per-process input and global batch assembly.

Each process produces its slice of every global batch (`global_batch / process_count` rows);
`to_global` turns those local numpy batches into one `jax.Array` sharded over the mesh.
An input iterator has `get_state()` / `set_state()` so that the checkpoint can save it and a
resumed run continues with exactly the batches it would have seen.
"""

import collections
import concurrent.futures
from typing import Any

import jax
import numpy as np

from big_vision_lite.data import shapes, tokenizer as tok_lib


def to_global(local_batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  """Local per-process batches -> global arrays (the batch axis is split over the mesh)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def value_range(image: np.ndarray, vmin: float = -1., vmax: float = 1.) -> np.ndarray:
  """uint8 [0, 255] -> float32 [vmin, vmax]."""
  return image.astype(np.float32) * ((vmax - vmin) / 255.) + vmin


class ShapesInput:
  """The infinite shapes training stream: the local part of global batch `step` is a pure
  function of (seed, step, process), so the state is just the next step. Batches are drawn
  ahead in a background thread."""

  def __init__(self, *, global_batch: int, seed: int = 0, image_size: int = 64, max_len: int = 16,
               tokenizer: str = tok_lib.SHAPES_MODEL, prefetch: int = 2,
               process_index: int | None = None, process_count: int | None = None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch % process_count:
      raise ValueError(f"batch_size {global_batch} is not divisible by {process_count} processes")
    self.global_batch, self.local_batch = global_batch, global_batch // process_count
    self.offset = process_index * self.local_batch
    self.seed, self.image_size, self.max_len = seed, image_size, max_len
    self.tokenizer = tok_lib.get(tokenizer)
    self.prefetch = prefetch
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._queue: collections.deque = collections.deque()
    self.step = 0

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of global batch `step`: image float32 [b, H, W, 3], labels int32 [b, L]."""
    start = step * self.global_batch + self.offset
    examples = [shapes.draw(self.seed, "train", i, self.image_size)
                for i in range(start, start + self.local_batch)]
    return {"image": value_range(np.stack([e["image"] for e in examples])),
            "labels": self.tokenizer.encode([e["caption"] for e in examples], self.max_len)}

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    while len(self._queue) < self.prefetch + 1:
      self._queue.append(self._pool.submit(self.batch, self.step + len(self._queue)))
    self.step += 1
    return self._queue.popleft().result()

  def get_state(self) -> dict[str, Any]:
    return {"step": self.step}

  def set_state(self, state: dict[str, Any]) -> None:
    for f in self._queue:
      f.cancel()
    self._queue.clear()
    self.step = int(state["step"])

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)


def make_input(input_config, global_batch: int):
  """The training input iterator named by `config.input.data.name`."""
  data = dict(input_config.data)
  name = data.pop("name", None)
  if name == "shapes":
    return ShapesInput(global_batch=global_batch, max_len=input_config.max_len,
                       tokenizer=input_config.get("tokenizer") or tok_lib.SHAPES_MODEL, **data)
  raise ValueError(f"unknown config.input.data.name {name!r}; known: ['shapes']")
