"""Embedding evaluation sets on the mesh, split over processes, each example counted once.

Every process embeds only its own contiguous share of an evaluation set (data.process_range)
in global batches: the last batches are zero-padded and the padded rows dropped. `stream_images`
hands each batch's embeddings of this process's rows to the caller as they come (memory: one
batch); `images` and `texts` gather every process's rows in dataset order on every process.
"""

import concurrent.futures
from typing import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_vision_lite import sharding as sharding_lib
from big_vision_lite.data import loader, ops
from big_vision_lite.distributed import gather_rows

# logits: a classifier's; tokens: the image tower's un-pooled tokens [N, D] per image.
REPRESENTATIONS = ("embedding", "pre_logits", "logits", "tokens")


def _local_rows(out: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in the order its local batch had them."""
  shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


class Embedder:
  """Runs one tower over this process's rows in global batches on the mesh.

  `apply(params, images or None, tokens or None) -> (zimg, ztxt, aux)` is the model's forward
  pass (TwoTowers' signature; see job.apply_fn, which adds LoRA adapters when there are any).
  """

  def __init__(self, apply: Callable, mesh, batch_size: int):
    n = mesh.devices.size
    self.batch_size = -(-batch_size // n) * n
    self.sharding = sharding_lib.batch_sharding(mesh)

    def image(params, x, representation):
      z, _, aux = apply(params, x, None)
      if callable(representation):  # A function of the parameters and the model's outputs.
        return representation(params, {"zimg": z, **aux})
      return {"embedding": z, "pre_logits": aux["img"]["pre_logits"],
              "logits": aux.get("logits"), "tokens": aux["img"].get("encoded")}[representation]

    # Outputs stay split like the batch: each process reads back only its own rows.
    self._image = jax.jit(image, static_argnums=2, out_shardings=self.sharding)
    self._text = jax.jit(lambda p, x: apply(p, None, x)[1], out_shardings=self.sharding)

  def _stream(self, fn: Callable, local, prep: Callable) -> Iterator[tuple[int, np.ndarray]]:
    """(start, fn(rows) [b, E] float32) for this process's rows [start, start + b), batch by
    batch. Every process must exhaust it: each batch is one program over all devices."""
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

    steps = -(-int(counts.max()) // rows)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as prefetch:
      nxt = prefetch.submit(load, 0) if steps else None
      for k in range(steps):
        batch = nxt.result()
        if k + 1 < steps:
          nxt = prefetch.submit(load, k + 1)
        out = _local_rows(fn(loader.to_global({"x": batch}, self.sharding)["x"]))
        valid = int(np.clip(len(local) - k * rows, 0, rows))  # Drop the padding rows.
        out = out[:valid]
        yield k * rows, out if out.dtype.kind in "iu" else out.astype(np.float32)

  def _gathered(self, stream: Iterator[tuple[int, np.ndarray]]) -> np.ndarray:
    parts = [emb for _, emb in stream]
    if not parts:  # An empty set on every process.
      return np.zeros((0, 0), np.float32)
    return gather_rows(np.concatenate(parts))

  def stream_images(self, params, local, representation: str = "embedding"
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """This process's images (uint8 [n, H, W, 3] array or LazyImages) -> (start, embeddings
    [b, E]) of its rows [start, start + b), one batch at a time (possibly b = 0); L2-normalised
    embeddings, the image tower's pre-logits or tokens, or what a function `representation`
    (params, model outputs) -> [b, ...] computes (a decoder's output, jitted with the tower).
    Every process must exhaust it."""
    if not callable(representation) and representation not in REPRESENTATIONS:
      raise ValueError(f"representation={representation!r} is not one of {REPRESENTATIONS}")
    prep = lambda x: ops.value_range(x) if x.dtype == np.uint8 else x.astype(np.float32)
    return self._stream(lambda x: self._image(params, x, representation), local, prep)

  def images(self, params, local, representation: str = "embedding") -> np.ndarray:
    """This process's images -> every process's embeddings [N, E] in process order (see
    `stream_images`)."""
    return self._gathered(self.stream_images(params, local, representation))

  def texts(self, params, local_tokens: np.ndarray) -> np.ndarray:
    """This process's int32 tokens [n, L] -> every process's L2-normalised embeddings [N, E]."""
    return self._gathered(self._stream(lambda x: self._text(params, x), local_tokens,
                                       lambda x: x))
