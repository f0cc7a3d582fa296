"""Training inputs (one interface, `TrainInput`) and global batch assembly.

Every training input is a `TrainInput`: iterating yields this process's rows of the next global
batch (`global_batch / process_count` rows, a dict of numpy arrays); `element_spec` gives their
shapes and dtypes without consuming anything; `skipped` counts the bad records skipped so far;
`get_state()` / `set_state()` let a checkpoint resume the exact sequence; `close()` stops threads
and worker processes. `to_global` turns the local batches of all processes into one `jax.Array`
sharded over the mesh.
"""

import abc
import collections
import concurrent.futures
from typing import Any

import grain
import jax
import numpy as np

from big_vision_lite.data import instruct, ops, shapes, sources, tokenizer as tok_lib

# {name: (shape of this process's batch, dtype)}
ElementSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


def to_global(local_batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  """Local per-process batches -> global arrays (the batch axis is split over the mesh)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


class TrainInput(abc.ABC):
  """The interface of every training input (see the module docstring)."""

  def __init__(self, global_batch: int, process_index: int | None = None,
               process_count: int | None = None):
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if global_batch % self.process_count:
      raise sources.DataError(f"batch_size {global_batch} is not divisible by the "
                              f"{self.process_count} processes: use a multiple of "
                              f"{self.process_count}")
    self.global_batch = global_batch
    self.local_batch = global_batch // self.process_count
    self.skipped = 0  # Bad records skipped so far by this process.

  def __iter__(self):
    return self

  @abc.abstractmethod
  def __next__(self) -> dict[str, np.ndarray]:
    """This process's rows of the next global batch."""

  @property
  @abc.abstractmethod
  def element_spec(self) -> ElementSpec:
    """{name: (shape of this process's batch, dtype)}, known without consuming a batch."""

  @abc.abstractmethod
  def get_state(self) -> dict[str, Any]:
    """The position in the stream (saved in checkpoints)."""

  @abc.abstractmethod
  def set_state(self, state: dict[str, Any]) -> None:
    """Continues exactly where `get_state` was taken."""

  @abc.abstractmethod
  def close(self) -> None:
    """Stops background threads and worker processes; safe to call twice."""


class ShapesInput(TrainInput):
  """The infinite shapes training stream: the local part of global batch `step` is a pure
  function of (seed, step, process), so the state is just the next step. Batches are drawn
  ahead in a background thread. Captioned images and their tokens ('image', 'labels') with one
  region of each (`region_labels` its caption's tokens, `region_box` [y0, x0, y1, x1] in [0, 1],
  `region_valid` 1), or, with `task` (one of shapes.TASKS), one-object images and their class
  ('image', 'label')."""

  def __init__(self, *, global_batch: int, seed: int = 0, image_size: int = 64, max_len: int = 16,
               tokenizer: str = tok_lib.SHAPES_MODEL, task: str | None = None, prefetch: int = 2,
               conversation: str | None = None, turns: int = 2, vlm_len: int = 32,
               process_index: int | None = None, process_count: int | None = None):
    super().__init__(global_batch, process_index, process_count)
    if task is not None and task not in shapes.TASKS:
      raise sources.DataError(f"unknown shapes task {task!r}; known: {list(shapes.TASKS)}")
    if conversation is not None and conversation not in instruct.CONVERSATIONS:
      raise sources.DataError(f"unknown shapes conversation {conversation!r}; known: "
                              f"{list(instruct.CONVERSATIONS)}")
    self.conversation, self.turns, self.vlm_len = conversation, turns, vlm_len
    self.offset = self.process_index * self.local_batch
    self.seed, self.image_size, self.max_len, self.task = seed, image_size, max_len, task
    self.tokenizer = tok_lib.get(tokenizer)
    self.prefetch = prefetch
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._queue: collections.deque = collections.deque()
    self.step = 0

  @property
  def element_spec(self) -> ElementSpec:
    b, s = self.local_batch, self.image_size
    image = ((b, s, s, 3), np.dtype(np.float32))
    if self.task:
      return {"image": image, "label": ((b,), np.dtype(np.int32))}
    tokens = ((b, self.max_len), np.dtype(np.int32))
    spec = {"image": image, "labels": tokens, "region_labels": tokens,
            "region_box": ((b, 4), np.dtype(np.float32)),
            "region_valid": ((b,), np.dtype(np.float32))}
    if self.conversation:
      spec.update(vlm_text=((b, self.vlm_len), np.dtype(np.int32)),
                  vlm_mask=((b, self.vlm_len), np.dtype(np.float32)))
    return spec

  def _batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of global batch `step`: image float32 [b, H, W, 3] and labels int32
    [b, L] (captions' tokens), or label int32 [b] (the task's class)."""
    rows = range(step * self.global_batch + self.offset,
                 step * self.global_batch + self.offset + self.local_batch)
    if self.task:
      examples, labels = zip(*[shapes.draw_task(self.task, self.seed, "train", i, self.image_size)
                               for i in rows])
      return {"image": ops.value_range(np.stack([e["image"] for e in examples])),
              "label": np.asarray(labels, np.int32)}
    examples = [shapes.draw(self.seed, "train", i, self.image_size, all_captions=False)
                for i in rows]
    regions = [e["regions"][shapes.region_pick(self.seed, "train", i, len(e["regions"]))]
               for i, e in zip(rows, examples)]
    out = {"image": ops.value_range(np.stack([e["image"] for e in examples])),
           "labels": self.tokenizer.encode([e["caption"] for e in examples], self.max_len),
           "region_labels": self.tokenizer.encode([r["text"] for r in regions], self.max_len),
           "region_box": np.asarray([r["box"] for r in regions], np.float32),
           "region_valid": np.ones(len(regions), np.float32)}
    if self.conversation:
      encoded = [instruct.encode(self.tokenizer, instruct.shapes_conversation(
          e, self.conversation, self.turns,
          np.random.default_rng((self.seed, shapes.SPLITS["train"], i, 2))), self.vlm_len,
          all_tokens=self.conversation == "text") for i, e in zip(rows, examples)]
      out["vlm_text"] = np.stack([t for t, _ in encoded])
      out["vlm_mask"] = np.stack([m for _, m in encoded])
    return out

  def __next__(self) -> dict[str, np.ndarray]:
    while len(self._queue) < self.prefetch + 1:
      self._queue.append(self._pool.submit(self._batch, self.step + len(self._queue)))
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


_SKIPPED = "__skipped__"  # Key of the marker a failed record becomes; its value says why.


def _why(error: Exception, record) -> str:
  """What failed on a record, and where to look."""
  if isinstance(error, ops.OpError):
    if isinstance(error.cause, KeyError):
      hint = ("check its inkey=/key= arguments against those keys, or the ops before it that "
              "should make the key (e.g. choice(inkey='captions', outkey='text') before tokenize)")
    else:
      hint = "check its arguments and the data it receives"
    return (f"op {error.op!r} raised {type(error.cause).__name__}: {error.cause}; the record had "
            f"keys {error.keys} at that op: {hint} in config.input.pp")
  keys = sorted(map(str, record)) if isinstance(record, dict) else type(record).__name__
  return (f"reading the record raised {type(error).__name__}: {error} (its fields: {keys}): "
          "check config.input.data (for tfds: image_key= and caption_key=)")


class _Preprocess:
  """Picklable per-example step run in grain workers: standardize + ops, or a skip marker."""

  def __init__(self, pp: str, defaults: dict[str, Any] | None = None):
    self.pp, self.defaults = pp, dict(defaults or {})
    self.pipeline = ops.parse(pp, **self.defaults)

  def __call__(self, record, rng):
    try:
      return self.pipeline(sources.standardize(record), rng)
    except Exception as e:  # pylint: disable=broad-except
      # A bad record (corrupt image, missing caption, unreadable member) is skipped and counted
      # in the consuming process, which also decides when too many in a row mean a broken
      # pipeline; workers only say why.
      return {_SKIPPED: _why(e, record)}

  def __getstate__(self):
    return {"pp": self.pp, "defaults": self.defaults}

  def __setstate__(self, state):
    self.__init__(state["pp"], state["defaults"])


class GrainInput(TrainInput):
  """Local batches from one source or a weighted mixture, through a grain pipeline.

  Each process reads a disjoint 1/process_count of every source (shuffled with `seed`, a new
  permutation every epoch), preprocessing runs in `num_workers` processes with per-example
  random streams, and the iterator state (saved in checkpoints) resumes the exact sequence.
  Records that fail are skipped and counted; more than `max_consecutive_skips` failures in a
  row stop with a DataError naming the failing op, since then the pipeline itself is broken.
  """

  def __init__(self, *, data, pp: str, global_batch: int, seed: int = 0, num_workers: int = 0,
               max_consecutive_skips: int = 100, op_defaults: dict[str, Any] | None = None,
               process_index: int | None = None, process_count: int | None = None):
    super().__init__(global_batch, process_index, process_count)
    if max_consecutive_skips < 0:
      raise sources.DataError(f"max_consecutive_skips={max_consecutive_skips} must be >= 0")
    self.seed, self.max_consecutive_skips = seed, max_consecutive_skips
    self._preprocess = _Preprocess(pp, op_defaults)
    entries = list(data) if isinstance(data, (list, tuple)) else [data]
    self._sources, datasets, weights = [], [], []
    for k, entry in enumerate(entries):
      source = sources.make_source(entry)
      if len(source) < self.process_count:
        raise sources.DataError(f"data source {dict(entry)} has {len(source)} examples, fewer "
                                f"than the {self.process_count} processes")
      for warning in getattr(source, "warnings", []):
        print(f"warning: {warning}", flush=True)
      self._sources.append((dict(entry), source))
      ds = grain.MapDataset.source(source)[self.process_index::self.process_count]
      datasets.append(ds.shuffle(seed=seed + k).repeat())
      weights.append(float(dict(entry).get("weight", 1.0)))
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    ds = ds.random_map(self._preprocess, seed=seed).to_iter_dataset()
    if num_workers:
      _absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    self._iter = iter(ds)
    self._consecutive = 0  # Records failed in a row; any success resets it.
    self._spec: ElementSpec | None = None
    self._closed = False

  def _broken(self, failures: int, why: str, source: dict | None = None) -> sources.DataError:
    records = f"{failures} record{'s' if failures > 1 else ''}"
    if failures <= self.max_consecutive_skips:  # A probe that ran out of records.
      what = f"all {records} of this process's part of data source {source}"
    else:
      what = f"{records} in a row" + (f" of data source {source}" if source else "")
    return sources.DataError(
        f"preprocessing failed on {what} (config.input.max_consecutive_skips="
        f"{self.max_consecutive_skips}); the last: {why}")

  def __next__(self) -> dict[str, np.ndarray]:
    examples = []
    while len(examples) < self.local_batch:
      ex = next(self._iter)
      if _SKIPPED in ex:
        self.skipped += 1
        self._consecutive += 1
        if self._consecutive > self.max_consecutive_skips:
          self.close()
          raise self._broken(self._consecutive, ex[_SKIPPED])
        continue
      self._consecutive = 0
      examples.append(ex)
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}

  @property
  def element_spec(self) -> ElementSpec:
    """From the first record of this process's part of each source that preprocesses (run here,
    not through the iterator); sources whose examples differ in keys or shapes are an error."""
    if self._spec is None:
      specs = [(entry, self._probe(entry, source)) for entry, source in self._sources]
      shapes_of = lambda spec: {k: shape[1:] for k, (shape, _) in spec.items()}  # noqa: E731
      (first_entry, first), *rest = specs
      for entry, spec in rest:
        if shapes_of(spec) != shapes_of(first):
          raise sources.DataError(
              f"data sources give examples of different shapes: {first_entry}: "
              f"{shapes_of(first)}, {entry}: {shapes_of(spec)}; make config.input.pp produce "
              "one size (e.g. resize(224))")
      self._spec = first
    return self._spec

  def _probe(self, entry: dict, source) -> ElementSpec:
    indices = range(self.process_index, len(source), self.process_count)
    rng = np.random.default_rng(self.seed)
    ex = {}
    for n, index in enumerate(indices[:self.max_consecutive_skips + 1], 1):
      ex = self._preprocess(source[index], rng)
      if _SKIPPED not in ex:
        return {k: ((self.local_batch, *np.shape(v)), np.asarray(v).dtype) for k, v in ex.items()}
    raise self._broken(n, ex[_SKIPPED], entry)

  def get_state(self) -> dict[str, Any]:
    return {"grain": self._iter.get_state(), "skipped": self.skipped}

  def set_state(self, state: dict[str, Any]) -> None:
    self._iter.set_state(state["grain"])
    self.skipped = int(state["skipped"])
    self._consecutive = 0

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      close = getattr(self._iter, "close", None)
      if close:
        close()


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; mark them parsed when no absl app ran."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_input(input_config, global_batch: int, *, image_size: int | None = None,
               max_len: int | None = None) -> TrainInput:
  """The training input for `config.input`.

  `input.data` is one source dict or a list of them (each with an optional `weight`), e.g.
  dict(name='tar', pattern='/data/shards-{00000..00099}.tar'); `input.pp` is the op string.
  Without `input.pp`, `data=dict(name='shapes', ...)` uses the built-in shapes stream, drawn at
  `image_size` (unless the source sets its own `image_size`) and tokenized to `max_len`. An op
  string sets its own sizes.
  """
  pp = input_config.get("pp")
  data = input_config.data
  if not pp:
    data = {} if isinstance(data, (list, tuple)) else dict(data)
    if data.get("name") != "shapes":
      raise sources.DataError("config.input.pp (the preprocessing op string) is required for "
                              f"config.input.data={input_config.data}")
    return ShapesInput(global_batch=global_batch,
                       max_len=input_config.get("max_len") if max_len is None else max_len,
                       tokenizer=input_config.get("tokenizer") or tok_lib.SHAPES_MODEL,
                       seed=data.get("seed", 0), task=data.get("task"),
                       image_size=data.get("image_size") or image_size or 64,
                       conversation=data.get("conversation"), turns=data.get("turns", 2),
                       vlm_len=data.get("vlm_len", 32))
  # `tokenize` without arguments takes the config's tokenizer and the model's text length.
  defaults = {"max_len": max_len, "model": input_config.get("tokenizer")}
  return GrainInput(data=data, pp=pp, global_batch=global_batch, seed=input_config.get("seed", 0),
                    num_workers=input_config.get("num_workers", 0),
                    max_consecutive_skips=input_config.get("max_consecutive_skips", 100),
                    op_defaults=defaults)
