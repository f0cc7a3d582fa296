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
import functools
import json
import os
import threading
import time
from typing import Any

import grain
import jax
import numpy as np

from big_vision_lite import distributed
from big_vision_lite.data import instruct, ops, shapes, sources, tokenizer as tok_lib

# {name: (shape of this process's batch, dtype)}; a NaFlex image is {'image': {key: ...}}.
ElementSpec = dict[str, Any]


class NaFlex:
  """Batch-level NaFlex preprocessing: each global batch `step` draws its sequence length from
  `lengths` (a pure function of (seed, step), the same in every process), and every image of
  the batch is resized (aspect ratio kept) and patchified to it with ops.naflex_image."""

  def __init__(self, patch_size: int, lengths, seed: int = 0):
    self.patch_size, self.lengths, self.seed = int(patch_size), tuple(lengths), seed
    if not self.lengths or min(self.lengths) < 1:
      raise sources.DataError(f"NaFlex sequence lengths {self.lengths} must be a non-empty list "
                              "of positive patch counts, e.g. (128, 256, 576, 784, 1024)")

  def length(self, step: int) -> int:
    """The sequence length of global batch `step`."""
    rng = np.random.default_rng((self.seed, step, 7))
    return self.lengths[int(rng.integers(len(self.lengths)))]

  def images(self, images, step: int) -> dict[str, np.ndarray]:
    """Images (any sizes, [H, W, 3]) -> the stacked NaFlex input at batch `step`'s length."""
    n = self.length(step)
    return stack([ops.naflex_image(np.asarray(im), self.patch_size, n) for im in images])

  def spec(self, local_batch: int, channels: int = 3) -> dict[str, tuple]:
    """The NaFlex image spec at the longest length."""
    n, p = max(self.lengths), self.patch_size
    return {"patches": ((local_batch, n, p * p * channels), np.dtype(np.float32)),
            "yidx": ((local_batch, n), np.dtype(np.int32)),
            "xidx": ((local_batch, n), np.dtype(np.int32)),
            "mask": ((local_batch, n), np.dtype(bool))}


def stack(examples: list) -> Any:
  """Stacks a list of examples (arrays, or dicts of them, nested) along a new batch axis."""
  if isinstance(examples[0], dict):
    return {k: stack([e[k] for e in examples]) for k in examples[0]}
  return np.stack([np.asarray(e) for e in examples])


def spec_of(example: dict, local_batch: int) -> ElementSpec:
  """The ElementSpec of batches of `example` (a dict of arrays or nested dicts)."""
  return {k: spec_of(v, local_batch) if isinstance(v, dict)
          else ((local_batch, *np.shape(v)), np.asarray(v).dtype) for k, v in example.items()}


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
  ('image', 'label').

  `aspect` > 1 draws non-square canvases (shapes.canvas), squashed to image_size x image_size,
  or with `naflex` (a NaFlex) patchified at their own aspect ratio."""

  def __init__(self, *, global_batch: int, seed: int = 0, image_size: int = 64, max_len: int = 16,
               tokenizer: str = tok_lib.SHAPES_MODEL, task: str | None = None, prefetch: int = 2,
               aspect: float = 1.0, naflex: NaFlex | None = None,
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
    self.aspect, self.naflex = aspect, naflex
    self.tokenizer = tok_lib.get(tokenizer)
    self.prefetch = prefetch
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._queue: collections.deque = collections.deque()
    self.step = 0

  @property
  def element_spec(self) -> ElementSpec:
    b, s = self.local_batch, self.image_size
    image = (self.naflex.spec(b) if self.naflex else ((b, s, s, 3), np.dtype(np.float32)))
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
      examples, labels = zip(*[shapes.draw_task(self.task, self.seed, "train", i, self.image_size,
                                                self.aspect) for i in rows])
      return {"image": self._images([e["image"] for e in examples], step),
              "label": np.asarray(labels, np.int32)}
    examples = [shapes.draw(self.seed, "train", i, self.image_size, all_captions=False,
                            aspect=self.aspect) for i in rows]
    regions = [e["regions"][shapes.region_pick(self.seed, "train", i, len(e["regions"]))]
               for i, e in zip(rows, examples)]
    out = {"image": self._images([e["image"] for e in examples], step),
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

  def _images(self, images: list[np.ndarray], step: int):
    """uint8 images -> float32 [-1, 1], squashed to the square size or NaFlex patches."""
    if self.naflex:
      out = self.naflex.images(images, step)  # Padding becomes -1: masked, never seen.
      return {**out, "patches": ops.value_range(out["patches"])}
    s = self.image_size
    return ops.value_range(np.stack([ops.OPS["resize"](s)({"image": im}, None)["image"]
                                     for im in images]))

  def __next__(self) -> dict[str, np.ndarray]:
    while len(self._queue) < self.prefetch + 1:
      self._queue.append(self._pool.submit(self._batch, self.step + len(self._queue)))
    self.step += 1
    return self._queue.popleft().result()

  def get_state(self) -> dict[str, Any]:
    return {"step": self.step}

  def set_state(self, state: dict[str, Any]) -> None:
    _check_state(state, "step", "the built-in shapes stream")
    for f in self._queue:
      f.cancel()
    self._queue.clear()
    self.step = int(state["step"])

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)


def _check_state(state: dict[str, Any], key: str, what: str) -> None:
  """A saved data position must come from the same kind of input: a grain pipeline's holds
  'grain' (and a 'step' of its own), the shapes stream's a 'step' alone."""
  if not isinstance(state, dict) or key not in state or (key != "grain" and "grain" in state):
    raise sources.DataError(
        f"the checkpoint's data position {str(state)[:80]} was saved by another kind of input "
        f"than config.input now gives ({what}): a run's input cannot change mid-run; resume "
        "with the run's own config.input (WORKDIR/config.json), or use a fresh --workdir")


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


class _ProcessRows(grain.MapDataset):
  """One process's rows of every global batch of a global stream: element j of process p is
  global element (j // b) * B + p * b + j % b (b = B / processes rows each). The global stream,
  shuffling and augmentation included, is the same for any process count."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, local_batch: int,
               process_index: int):
    super().__init__(parent)
    self.global_batch, self.local_batch, self.process_index = (global_batch, local_batch,
                                                               process_index)

  def __len__(self) -> int:
    return len(self._parent) // self.global_batch * self.local_batch

  def _global(self, index: int) -> int:
    batch, row = divmod(index, self.local_batch)
    return batch * self.global_batch + self.process_index * self.local_batch + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global(index)]

  def __str__(self) -> str:
    return f"_ProcessRows(process {self.process_index}, {self.local_batch}/{self.global_batch})"


class GrainInput(TrainInput):
  """Local batches from one source or a weighted mixture, through a grain pipeline.

  One global stream (every source shuffled with `seed`, a new permutation every epoch, mixed by
  weight, each example with its own random stream) is cut into global batches; each process
  takes its `global_batch / process_count` rows of each, so the processes read disjoint parts
  of every epoch, and the global batches do not depend on the process count (while no record is
  skipped). Preprocessing runs in `num_workers` processes, and the iterator state (saved in
  checkpoints, every process's own) resumes the exact sequence. Records that fail are skipped
  and counted (the process takes its next row instead); more than `max_consecutive_skips`
  failures in a row stop with a DataError naming the failing op, since then the pipeline itself
  is broken.
  With `naflex` (a NaFlex), the op string leaves images as arrays of any size and each batch is
  patchified at the sequence length drawn for it.
  """

  def __init__(self, *, data, pp: str, global_batch: int, seed: int = 0, num_workers: int = 0,
               max_consecutive_skips: int = 100, op_defaults: dict[str, Any] | None = None,
               naflex: NaFlex | None = None,
               process_index: int | None = None, process_count: int | None = None):
    super().__init__(global_batch, process_index, process_count)
    if max_consecutive_skips < 0:
      raise sources.DataError(f"max_consecutive_skips={max_consecutive_skips} must be >= 0")
    self.seed, self.max_consecutive_skips = seed, max_consecutive_skips
    self.naflex, self.step = naflex, 0
    self._preprocess = _Preprocess(pp, op_defaults)
    entries = list(data) if isinstance(data, (list, tuple)) else [data]
    self._sources, datasets, weights = [], [], []
    for k, entry in enumerate(entries):
      source = sources.make_source(entry)
      for warning in getattr(source, "warnings", []):
        print(f"warning: {warning}", flush=True)
      self._sources.append((dict(entry), source))
      datasets.append(grain.MapDataset.source(source).shuffle(seed=seed + k).repeat())
      weights.append(float(dict(entry).get("weight", 1.0)))
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    ds = ds.random_map(self._preprocess, seed=seed)
    ds = _ProcessRows(ds, self.global_batch, self.local_batch, self.process_index)
    ds = ds.to_iter_dataset()
    if num_workers:
      _absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                          worker_init_fn=functools.partial(_end_with_parent, os.getpid()))
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
    self.step += 1
    if self.naflex:
      images = self.naflex.images([e.pop("image") for e in examples], self.step - 1)
      return {"image": images, **stack(examples)}
    return stack(examples)

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
        spec = spec_of(ex, self.local_batch)
        return {**spec, "image": self.naflex.spec(self.local_batch)} if self.naflex else spec
    raise self._broken(n, ex[_SKIPPED], entry)

  def get_state(self) -> dict[str, Any]:
    """This process's position, and in a multi-process job every process's (a checkpoint
    holds one state for all), with the process count and the size of each source."""
    own = {"grain": self._iter.get_state(), "skipped": self.skipped, "step": self.step}
    state = {**own, "process_count": self.process_count,
             "examples": [len(source) for _, source in self._sources]}
    if jax.process_count() > 1 and jax.process_count() == self.process_count:
      state["processes"] = _gather_json(own)
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    _check_state(state, "grain", "a grain pipeline (config.input.pp)")
    saved = state.get("process_count", self.process_count)
    if saved != self.process_count:
      raise sources.DataError(
          f"the checkpoint's input position is for {saved} processes and this run has "
          f"{self.process_count}: each process resumes its own position, so resume with "
          f"{saved} processes, or start a new run from these weights (config.model_init)")
    sizes = [len(source) for _, source in self._sources]
    if state.get("examples", sizes) != sizes:
      raise sources.DataError(
          f"the data sources have {sizes} examples and had {state['examples']} when the "
          "checkpoint was saved: shards were added, removed or rewritten, so the sample "
          "numbering differs and the run cannot resume exactly; restore the data, or start a "
          "new run from these weights (config.model_init)")
    own = state["processes"][self.process_index] if "processes" in state else state
    self._iter.set_state(own["grain"])
    self.skipped = int(own["skipped"])
    self.step = int(own.get("step", 0))
    self._consecutive = 0

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      close = getattr(self._iter, "close", None)
      if close:
        close()


def _gather_json(value) -> list:
  """[value of process 0, value of process 1, ...] of a JSON-able value (a collective)."""
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  lengths = distributed.gather_rows(np.asarray([len(data)], np.int64))
  flat = distributed.gather_rows(data).tobytes()
  ends = np.cumsum(lengths)
  return [json.loads(flat[end - n:end]) for n, end in zip(lengths, ends)]


def _end_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
  """Runs first in each grain worker process: a watchdog thread ends the worker once `parent`
  (the trainer) is gone, however it ended (`kill -9` included), so that no worker (nor, once
  they are gone, multiprocessing's resource tracker) outlives its trainer holding memory. Not
  the parent-death signal: it follows the thread that started the worker, and grain starts
  them from short-lived threads."""
  del worker_index, worker_count

  def watch():
    while os.getppid() == parent:
      time.sleep(_WATCHDOG_SEC)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


_WATCHDOG_SEC = 0.5


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; mark them parsed when no absl app ran."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_input(input_config, global_batch: int, *, image_size: int | None = None,
               max_len: int | None = None, patch_size: int | None = None) -> TrainInput:
  """The training input for `config.input`.

  `input.data` is one source dict or a list of them (each with an optional `weight`), e.g.
  dict(name='tar', pattern='/data/shards-{00000..00099}.tar'); `input.pp` is the op string.
  Without `input.pp`, `data=dict(name='shapes', ...)` uses the built-in shapes stream, drawn at
  `image_size` (unless the source sets its own `image_size`) and tokenized to `max_len`. An op
  string sets its own sizes.

  `input.seq_lengths` (with the NaFlex model's `patch_size`) patchifies each batch at a
  sequence length drawn from that list (NaFlex); `shapes`' `aspect` draws non-square canvases.
  """
  pp = input_config.get("pp")
  data = input_config.data
  lengths = input_config.get("seq_lengths")
  if lengths and patch_size is None:
    raise sources.DataError("input.seq_lengths patchifies images for a NaFlex model, but the "
                            "model takes square images: set model.image.naflex=True or drop "
                            "input.seq_lengths")
  naflex = NaFlex(patch_size, lengths, input_config.get("seed", 0)) if lengths else None
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
                       aspect=data.get("aspect", 1.0), naflex=naflex,
                       conversation=data.get("conversation"), turns=data.get("turns", 2),
                       vlm_len=data.get("vlm_len", 32))
  # `tokenize` without arguments takes the config's tokenizer and the model's text length.
  defaults = {"max_len": max_len, "model": input_config.get("tokenizer")}
  return GrainInput(data=data, pp=pp, global_batch=global_batch, seed=input_config.get("seed", 0),
                    num_workers=input_config.get("num_workers", 0),
                    max_consecutive_skips=input_config.get("max_consecutive_skips", 100),
                    op_defaults=defaults, naflex=naflex)
