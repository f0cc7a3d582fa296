"""Per-process input and global batch assembly.

Each process produces its slice of every global batch (`global_batch / process_count` rows);
`to_global` turns those local numpy batches into one `jax.Array` sharded over the mesh.
An input iterator has `get_state()` / `set_state()` so that the checkpoint can save it and a
resumed run continues with exactly the batches it would have seen.
"""

import collections
import concurrent.futures
from typing import Any

import grain
import jax
import numpy as np

from big_vision_lite.data import ops, shapes, sources, tokenizer as tok_lib


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
    self.skipped = 0  # Drawn examples never fail.

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


_SKIPPED = "__skipped__"


class _Preprocess:
  """Picklable per-example step run in grain workers: standardize + ops, or a skip marker."""

  def __init__(self, pp: str):
    self.pp = pp
    self.pipeline = ops.parse(pp)

  def __call__(self, record, rng):
    try:
      return self.pipeline(sources.standardize(record), rng)
    except Exception:  # pylint: disable=broad-except
      # Any bad record (corrupt image, missing caption, unreadable member) is skipped and
      # counted in the consuming process, never a crash.
      return {_SKIPPED: True}

  def __getstate__(self):
    return {"pp": self.pp}

  def __setstate__(self, state):
    self.__init__(state["pp"])


class GrainInput:
  """Local batches from one source or a weighted mixture, through a grain pipeline.

  Each process reads a disjoint 1/process_count of every source (shuffled with `seed`, a new
  permutation every epoch), preprocessing runs in `num_workers` processes with per-example
  random streams, and the iterator state (saved in checkpoints) resumes the exact sequence.
  """

  def __init__(self, *, data, pp: str, global_batch: int, seed: int = 0, num_workers: int = 0,
               process_index: int | None = None, process_count: int | None = None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch % process_count:
      raise ValueError(f"batch_size {global_batch} is not divisible by {process_count} processes")
    self.local_batch = global_batch // process_count
    entries = list(data) if isinstance(data, (list, tuple)) else [data]
    datasets, weights = [], []
    for k, entry in enumerate(entries):
      source = sources.make(entry)
      if len(source) < process_count:
        raise ValueError(f"data source {dict(entry)} has {len(source)} examples, fewer than the "
                         f"{process_count} processes")
      for warning in getattr(source, "warnings", []):
        print(f"warning: {warning}", flush=True)
      ds = grain.MapDataset.source(source)[process_index::process_count]
      datasets.append(ds.shuffle(seed=seed + k).repeat())
      weights.append(float(dict(entry).get("weight", 1.0)))
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    ds = ds.random_map(_Preprocess(pp), seed=seed).to_iter_dataset()
    if num_workers:
      _absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    self._iter = iter(ds)
    self.skipped = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    examples = []
    while len(examples) < self.local_batch:
      ex = next(self._iter)
      if _SKIPPED in ex:
        self.skipped += 1
        continue
      examples.append(ex)
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """A batch with the pipeline's shapes (for building the model); does not advance."""
    del step
    state = self.get_state()
    out = next(self)
    self.set_state(state)
    return out

  def get_state(self) -> dict[str, Any]:
    return {"grain": self._iter.get_state(), "skipped": self.skipped}

  def set_state(self, state: dict[str, Any]) -> None:
    self._iter.set_state(state["grain"])
    self.skipped = int(state["skipped"])

  def close(self) -> None:
    close = getattr(self._iter, "close", None)
    if close:
      close()


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; mark them parsed when no absl app ran."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_input(input_config, global_batch: int, *, image_size: int | None = None,
               max_len: int | None = None):
  """The training input iterator for `config.input`.

  `input.data` is one source dict or a list of them (each with an optional `weight`), e.g.
  dict(name='tar', pattern='/data/shards-{00000..00099}.tar'); `input.pp` is the op string.
  Without `input.pp`, `data=dict(name='shapes', ...)` uses the built-in shapes stream, drawn at
  `image_size` (unless the source sets its own) and tokenized to `max_len`.
  """
  pp = input_config.get("pp")
  data = input_config.data
  if not pp:
    data = dict(data) if not isinstance(data, (list, tuple)) else {}
    if data.get("name") != "shapes":
      raise ValueError("config.input.pp (the preprocessing op string) is required for "
                       f"config.input.data={input_config.data}")
    return ShapesInput(global_batch=global_batch, max_len=max_len or input_config.get("max_len"),
                       tokenizer=input_config.get("tokenizer") or tok_lib.SHAPES_MODEL,
                       seed=data.get("seed", 0),
                       image_size=data.get("image_size") or image_size or 64)
  return GrainInput(data=data, pp=pp, global_batch=global_batch,
                    seed=input_config.get("seed", 0), num_workers=input_config.get("num_workers", 0))
