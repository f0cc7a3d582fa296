"""Embedding a whole evaluation set with the model, on the mesh, on every process."""

import jax
import numpy as np

from big_vision_lite import sharding as sharding_lib
from big_vision_lite.data import loader


class Embedder:
  """Runs one tower over numpy arrays in global batches; returns float32 numpy embeddings.

  Every process passes the same full array; each feeds its own rows of each batch, the last batch
  is padded and the padding dropped, and the result is replicated to all processes.
  """

  def __init__(self, model, mesh, batch_size: int):
    n = mesh.devices.size
    self.batch_size = -(-batch_size // n) * n
    self.sharding = sharding_lib.batch_sharding(mesh)
    self.process_count, self.process_index = jax.process_count(), jax.process_index()
    out = sharding_lib.replicated(mesh)
    self._image = jax.jit(lambda p, x: model.apply({"params": p}, x, None)[0], out_shardings=out)
    self._text = jax.jit(lambda p, x: model.apply({"params": p}, None, x)[1], out_shardings=out)

  def _run(self, fn, params, data: np.ndarray, prep=lambda x: x) -> np.ndarray:
    outs = []
    rows = self.batch_size // self.process_count
    for start in range(0, len(data), self.batch_size):
      chunk = data[start:start + self.batch_size]
      valid = len(chunk)
      if valid < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - valid, *chunk.shape[1:]),
                                                chunk.dtype)])
      local = chunk[self.process_index * rows:(self.process_index + 1) * rows]
      out = fn(params, loader.to_global({"x": prep(local)}, self.sharding)["x"])
      outs.append(np.asarray(out)[:valid])
    return np.concatenate(outs).astype(np.float32)

  def images(self, params, images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> L2-normalised [N, E]."""
    return self._run(self._image, params, images, loader.value_range)

  def texts(self, params, tokens: np.ndarray) -> np.ndarray:
    """int32 [N, L] -> L2-normalised [N, E]."""
    return self._run(self._text, params, tokens)
