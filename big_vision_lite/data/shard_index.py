"""Tar shards at any scale: listing (local paths or any fsspec URL), the per-shard index, reads.

A shard's index is the byte offset where each sample starts (the header of its first member)
and where the last one ends: int64 [n + 1], 8 bytes a sample. It lives in `SHARD.tar.idx`
beside the shard (written by `make_shards`, or built on first use), or in a cache folder when
the shard's folder is not writable or remote. A sample is then one read of its byte range, whose
tar headers name its members. The file:

  b"BVLIDX01" | shard size (int64) | shard modification time (int64 ns) | samples n (int64)
  | crc32 (uint32) | note length (uint32) | offsets int64 [n + 1]
  | note (utf-8: why the shard is cut short, empty when it is whole)

all little-endian; the crc covers the offsets and the note. The index is valid for a shard of
the recorded size and modification time (copying shards to a bucket changes the time: their
indexes are then built again, once). Each read also checks that its bytes are the tar headers
of one sample, so a shard rewritten during a run is caught at its first read.
"""

import concurrent.futures
import hashlib
import io
import multiprocessing
import os
import re
import struct
import sys
import tarfile
import time
import zlib

import numpy as np

from big_vision_lite import errors

MAGIC = b"BVLIDX01"
_HEADER = struct.Struct("<8sqqqII")
SUFFIX = ".idx"


class ShardError(errors.Error, ValueError):
  """Shards that cannot be listed or read as indexed; the message names the path and the fix."""


def is_remote(path: str) -> bool:
  return "://" in path and not path.startswith("file://")


def _fs(path: str):
  """The fsspec filesystem of a URL (instances are cached by fsspec)."""
  import fsspec  # pylint: disable=import-outside-toplevel
  try:
    return fsspec.core.url_to_fs(path)[0]
  except (ImportError, ValueError) as e:
    protocol = path.split("://")[0]
    extra = {"gs": "gcs", "gcs": "gcs", "s3": "s3"}.get(protocol)
    how = (f"pip install 'big_vision_lite[{extra}]'" if extra else
           f"install the fsspec implementation of {protocol}://")
    raise ShardError(f"cannot open {path}: {e}; {how}") from None


def _listing_error(path: str, e: Exception) -> ShardError:
  return ShardError(f"cannot list {path}: {type(e).__name__}: {e}. Check the bucket and path, "
                    "the credentials (e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                    "`gcloud auth application-default login`) and the endpoint "
                    "(AWS_ENDPOINT_URL for S3-compatible storage)")


def _mtime_ns(entry: dict) -> int:
  """The modification time (ns since 1970) in an fsspec listing entry; 0 when it has none."""
  for key in ("mtime", "LastModified", "updated", "last_modified"):
    value = entry.get(key)
    if value is None:
      continue
    if isinstance(value, str):
      import datetime  # pylint: disable=import-outside-toplevel
      value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if hasattr(value, "timestamp"):
      value = value.timestamp()
    return int(float(value) * 1e9)
  return 0


def _remote_sizes(folder: str) -> dict[str, tuple[int, int]]:
  """{url: (size, mtime)} of the files in a remote folder (one listing, paginated by fsspec)."""
  fs = _fs(folder)
  protocol = folder.split("://")[0]
  try:
    entries = fs.ls(folder, detail=True)
  except Exception as e:  # pylint: disable=broad-except
    raise _listing_error(folder, e) from None
  return {f"{protocol}://{e['name']}": (int(e["size"]), _mtime_ns(e)) for e in entries
          if e["type"] == "file"}


def list_shards(pattern: str) -> list[tuple[str, int, int]]:
  """[(path, size, modification time in ns)] for a directory, a glob, a brace range
  (`shards-{00000..00099}.tar`), or a comma-separated list of those, local or remote (any
  fsspec URL); sorted within each part.
  Names of a range that do not exist are left out (img2dataset leaves failed shards out)."""
  out = []
  for part in pattern.split(","):
    part = part.strip()
    m = re.search(r"\{(\d+)\.\.(\d+)\}", part)
    if m:
      lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
      names = [part[:m.start()] + str(i).zfill(width) + part[m.end():] for i in range(lo, hi + 1)]
    elif is_remote(part) and not any(c in part for c in "*?["):
      names = None  # A folder or one file: one listing says which.
    elif is_remote(part):
      fs, protocol = _fs(part), part.split("://")[0]
      try:
        found = fs.glob(part, detail=True)
      except Exception as e:  # pylint: disable=broad-except
        raise _listing_error(part, e) from None
      out.extend(sorted((f"{protocol}://{k}", int(v["size"]), _mtime_ns(v))
                        for k, v in found.items() if v["type"] == "file"))
      continue
    elif os.path.isdir(part):
      names = sorted(os.path.join(part, n) for n in os.listdir(part) if n.endswith(".tar"))
    else:
      import glob  # pylint: disable=import-outside-toplevel
      names = sorted(glob.glob(part))
    if not is_remote(part):
      for name in names:
        try:
          st = os.stat(name)
        except OSError:
          continue
        if not os.path.isdir(name):
          out.append((name, st.st_size, st.st_mtime_ns))
      continue
    if names is None:
      sizes = _remote_sizes(part.rstrip("/"))
      if list(sizes) == [part] or part in sizes:  # One file.
        out.append((part, *sizes[part]))
      else:
        out.extend(sorted((k, *v) for k, v in sizes.items() if k.endswith(".tar")))
      continue
    folders: dict[str, dict[str, int]] = {}
    for name in names:
      folder = name.rsplit("/", 1)[0]
      if folder not in folders:
        folders[folder] = _remote_sizes(folder)
      if name in folders[folder]:
        out.append((name, *folders[folder][name]))
  return out


def read_range(path: str, start: int, end: int) -> bytes:
  """Bytes [start, end) of a file: one read (one ranged GET on remote storage)."""
  try:
    if is_remote(path):
      return _fs(path).cat_file(path, start=start, end=end)
    fd = os.open(path, os.O_RDONLY)
    try:
      return os.pread(fd, end - start, start)
    finally:
      os.close(fd)
  except OSError as e:
    raise ShardError(f"cannot read {path} (bytes {start}..{end}), which was there at start: "
                     f"{type(e).__name__}: {e}; restore the shard (or start a new run without "
                     "it)") from None


def _read_all(path: str) -> bytes | None:
  """A whole small file, or None if there is none."""
  try:
    if is_remote(path):
      return _fs(path).cat_file(path)
    with open(path, "rb") as f:
      return f.read()
  except (FileNotFoundError, NotADirectoryError):
    return None


def _write_atomic(path: str, data: bytes) -> None:
  if is_remote(path):
    _fs(path).pipe_file(path, data)
    return
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def default_cache_dir() -> str:
  return os.environ.get("BVL_INDEX_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "big_vision_lite", "shard_index")


def index_paths(shard: str, cache_dir: str | None, beside_only: bool = False) -> list[str]:
  """Where the index of `shard` may be, in the order they are tried: beside the shard, then the
  cache (remote shards: the local cache first, it costs no request)."""
  beside = shard + SUFFIX
  if beside_only:
    return [beside]
  digest = hashlib.sha1(shard.encode()).hexdigest()[:16]
  cached = os.path.join(cache_dir or default_cache_dir(),
                        f"{digest}-{os.path.basename(shard)}{SUFFIX}")
  return [cached, beside] if is_remote(shard) else [beside, cached]


# --- The index file.

def encode(shard_size: int, mtime: int, offsets: np.ndarray, note: str) -> bytes:
  body = np.asarray(offsets, "<i8").tobytes() + note.encode("utf-8")
  return _HEADER.pack(MAGIC, shard_size, mtime, len(offsets) - 1, zlib.crc32(body),
                      len(note.encode("utf-8"))) + body


def _when(ns: int) -> str:
  return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9)) + f".{ns % 10**9:09d}"


def decode(data: bytes, shard_size: int, mtime: int) -> tuple[np.ndarray, str]:
  """(offsets int64 [n + 1], note) of an index file; ValueError saying why it is damaged, or
  StaleIndex when it describes a shard of another size."""
  if len(data) < _HEADER.size or data[:8] != MAGIC:
    raise ValueError("not an index file (no BVLIDX01 header)")
  _, size, indexed_mtime, n, crc, note_len = _HEADER.unpack_from(data)
  if len(data) != _HEADER.size + 8 * (n + 1) + note_len:
    raise ValueError(f"{len(data)} bytes where its header says "
                     f"{_HEADER.size + 8 * (n + 1) + note_len}")
  body = data[_HEADER.size:]
  if zlib.crc32(body) != crc:
    raise ValueError("checksum mismatch")
  if (size, indexed_mtime) != (shard_size, mtime):
    raise StaleIndex(f"indexed at {size} bytes modified {_when(indexed_mtime)}, now "
                     f"{shard_size} bytes modified {_when(mtime)}")
  offsets = np.frombuffer(body, "<i8", n + 1)
  return offsets, body[8 * (n + 1):].decode("utf-8")


class StaleIndex(ValueError):
  """An index of an earlier version of its shard."""


# --- Building an index: walking the member headers.

class _Unusual(Exception):
  """A header the fast reader leaves to tarfile: pax or GNU long-name headers, base-256 sizes,
  links, a bad checksum, bytes cut short."""


_FILE, _DIR, _ZERO = (b"0", b"\0", b"7"), b"5", bytes(tarfile.BLOCKSIZE)


def _header(block: bytes) -> tuple[str, int, bool] | None:
  """(name, size, is a regular file) of a plain ustar/GNU header, None for an end-of-archive
  block; _Unusual for anything else. (tarfile's own reading costs ~10x more per member.)"""
  if len(block) < tarfile.BLOCKSIZE:
    raise _Unusual
  if block == _ZERO:
    return None
  field = block[148:156]
  try:
    stored = int(field.split(b"\0")[0].strip() or b"x", 8)
    kind, raw = block[156:157], block[124:136]
    if raw[0] & 0x80 or kind not in _FILE + (_DIR,):
      raise _Unusual
    size = int(raw.split(b"\0")[0].strip() or b"0", 8)
  except ValueError:
    raise _Unusual from None
  if stored != sum(block) - sum(field) + 8 * 32:  # The checksum counts its field as spaces.
    raise _Unusual
  name = block[:100].split(b"\0", 1)[0]
  if block[257:263] == b"ustar\0":  # POSIX: a name prefix
    prefix = block[345:500].split(b"\0", 1)[0]
    name = prefix + b"/" + name if prefix else name
  name = name.decode("utf-8", "surrogateescape")
  return name, size, kind in _FILE and not name.endswith("/")


def _member_of_a_sample(name: str, is_file: bool) -> bool:
  return is_file and not os.path.basename(name).startswith(".")


def _scan_fast(f, size: int) -> tuple[list[int], int, int]:
  """(sample starts, end of the last member, where the archive ends) of a whole plain tar."""
  starts, end, last_key, pos = [], 0, None, 0
  while pos < size:
    f.seek(pos)
    header = _header(f.read(tarfile.BLOCKSIZE))
    if header is None:
      break
    name, n, is_file = header
    if pos + tarfile.BLOCKSIZE + n > size:
      raise _Unusual
    if _member_of_a_sample(name, is_file):
      key = sample_key(name)
      if key != last_key:
        starts.append(pos)
        last_key = key
      end = pos + tarfile.BLOCKSIZE + n
    pos += tarfile.BLOCKSIZE + -(-n // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
  return starts, end, pos


def scan(path: str, size: int) -> tuple[np.ndarray, str]:
  """(offsets [n + 1], why the shard is cut short or '') from the member headers. A sample is a
  run of consecutive members with one key (KEY.jpg, KEY.txt, ...), as webdataset groups them."""
  starts, end, last_key = [], 0, None
  if is_remote(path):
    f = _fs(path).open(path, "rb", block_size=1 << 23, cache_type="readahead")
  else:
    f = open(path, "rb")  # pylint: disable=consider-using-with
  with f:
    problem = None
    try:
      starts, end, archive_end = _scan_fast(f, size)
      problem = _trailing_problem(f, archive_end, size)
    except _Unusual:  # tarfile reads what the fast path does not, and says where a shard is cut.
      starts, end = [], 0
      f.seek(0)
    else:
      return np.asarray(starts + [end] if starts else [0], np.int64), problem or ""
    try:
      with tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
          if member.offset_data + member.size > size:
            problem = (f"{member.name} needs bytes up to {member.offset_data + member.size}, "
                       f"the file ends at {size}")
            break
          if not member.isfile() or os.path.basename(member.name).startswith("."):
            continue
          key = sample_key(member.name)
          if key != last_key:
            starts.append(member.offset)
            last_key = key
          end = member.offset_data + member.size
        else:
          problem = _trailing_problem(f, tar.offset, size)
    except (tarfile.TarError, OSError) as e:
      problem = f"{type(e).__name__}: {e}"
  offsets = np.asarray(starts + [end] if starts else [0], np.int64)
  return offsets, problem or ""


def sample_key(name: str) -> str:
  """'dir/KEY' of a member 'dir/KEY.ext' (the extension starts at the first dot)."""
  folder, base = os.path.split(name)
  return os.path.join(folder, base.partition(".")[0])


def _trailing_problem(f, end: int, file_size: int) -> str | None:
  """Why bytes end.. of a tar are not the end-of-archive zero blocks, or None if they are.
  (tarfile stops quietly at a header cut off by the end of the file or at bytes that are no
  header at all, so a whole archive is one whose rest is the zero blocks that end it.)"""
  if end >= file_size:
    return f"no end-of-archive marker: the file ends at byte {file_size}, after the last member"
  f.seek(end)
  pos = end
  while chunk := f.read(1 << 20):
    stripped = chunk.lstrip(b"\0")
    if stripped:
      pos += len(chunk) - len(stripped)
      break
    pos += len(chunk)
  else:
    return None
  if pos > end:
    return (f"{file_size - pos} bytes of data at byte {pos}, after the end-of-archive marker at "
            f"byte {end}, are not read")
  if file_size - end < tarfile.BLOCKSIZE:
    return f"a member header at byte {end} is cut off by the end of the file at byte {file_size}"
  return f"the bytes from byte {end} on are neither a member header nor the end-of-archive marker"


def build(shard: str, size: int, mtime: int, cache_dir: str | None, beside_only: bool = False
          ) -> tuple[int, str, int]:
  """Indexes a shard and writes the index to the first place that takes it: (samples, note,
  which of `index_paths` holds it)."""
  offsets, note = scan(shard, size)
  data = encode(size, mtime, offsets, note)
  places = index_paths(shard, cache_dir, beside_only)
  for where, path in enumerate(places):
    try:
      if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      _write_atomic(path, data)
      return len(offsets) - 1, note, where
    except (OSError, PermissionError) as e:
      error = e
  raise ShardError(f"cannot write the index of {shard} to {' or '.join(places)}: {error}; set "
                   "index_dir (config.input.data) or BVL_INDEX_DIR to a writable folder")


def _build_star(args):
  return build(*args)


def build_all(todo: list[tuple[str, int, int]], cache_dir: str | None, beside_only: bool = False,
              workers: int | None = None, log=print) -> list[tuple[int, str, int]]:
  """`build` for many shards in parallel (processes: walking headers is Python work), printing
  a progress bar with the rate and an ETA every few seconds."""
  workers = workers or os.cpu_count() or 1
  args = [(*shard, cache_dir, beside_only) for shard in todo]
  if len(todo) < 16 or workers == 1:
    results, pool = map(_build_star, args), None
  else:
    # Not fork: the parent may run threads (JAX, grain) that a forked child would inherit stuck.
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    results = pool.map(_build_star, args, chunksize=max(1, min(64, len(todo) // (8 * workers))))
  out, start, shown = [], time.monotonic(), time.monotonic()
  try:
    for result in results:
      out.append(result)
      now = time.monotonic()
      if now - shown > 3 or (len(out) == len(todo) and now - start > 3):
        shown = now
        rate = len(out) / (now - start)
        bar = "#" * (20 * len(out) // len(todo))
        log(f"indexing tar shards (once; cached for later runs): [{bar:<20}] {len(out)}/"
            f"{len(todo)}, {rate:.0f} shards/s, ETA {(len(todo) - len(out)) / rate:.0f} s",
            flush=True)
  finally:
    if pool:
      pool.shutdown(cancel_futures=True)
  return out


def _read_index(shard: str, size: int, mtime: int, cache_dir: str | None, beside_only: bool,
                problems: list[str]) -> tuple[int, str, int] | None:
  """(samples, note, which place) of the first valid index of a shard, or None; why each index
  found is not used goes to `problems`."""
  for where, path in enumerate(index_paths(shard, cache_dir, beside_only)):
    data = _read_all(path)
    if data is None:
      continue
    try:
      offsets, note = decode(data, size, mtime)
    except StaleIndex as e:
      problems.append(f"{shard} changed since it was indexed ({e}): indexed again")
    except ValueError as e:
      problems.append(f"the index {path} is damaged ({e}): indexed again")
    else:
      return len(offsets) - 1, note, where
  return None


def load_counts(listed: list[tuple[str, int, int]], cache_dir: str | None = None,
                beside_only: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(samples per shard int64 [S], where each index is (an index into `index_paths`) uint8 [S],
  warnings) for [(shard, size, mtime)]: indexes are read (remote: 32 at a time), and those missing,
  stale or damaged are built (`build_all`)."""
  problems: list[list[str]] = [[] for _ in listed]
  args = [(*shard, cache_dir, beside_only, p) for shard, p in zip(listed, problems)]
  if any(is_remote(shard) for shard, _, _ in listed):
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
      found = list(pool.map(lambda a: _read_index(*a), args))
  else:
    found = [_read_index(*a) for a in args]
  todo = [i for i, f in enumerate(found) if f is None]
  for i, result in zip(todo, build_all([listed[i] for i in todo], cache_dir, beside_only)):
    found[i] = result
  counts = np.asarray([n for n, _, _ in found], np.int64)
  where = np.asarray([w for _, _, w in found], np.uint8)
  warnings = [w for p in problems for w in p]
  warnings += [f"{shard}: cut short after {n} samples ({note})"
               for (shard, _, _), (n, note, _) in zip(listed, found) if note]
  return counts, where, warnings


def load_offsets(shard: str, size: int, mtime: int, where: int, cache_dir: str | None,
                 count: int) -> np.ndarray:
  """The offsets [count + 1] of a shard whose index was found valid at start. If the index has
  gone bad since, the shard's headers are read again; a shard that no longer has `count`
  samples is an error (the run's sample numbering would change)."""
  path = index_paths(shard, cache_dir)[where]
  data = _read_all(path)
  try:
    if data is None:
      raise ValueError("it is gone")
    offsets, _ = decode(data, size, mtime)
  except ValueError as e:
    warn(f"the index {path} of {shard} is unreadable now ({e}): reading the shard's headers")
    offsets, _ = scan(shard, size)
  if len(offsets) != count + 1:
    raise ShardError(f"{shard} changed during the run: {len(offsets) - 1} samples where it had "
                     f"{count} at start; restore the shard or start a new run")
  return offsets


def parse_sample(data: bytes, shard: str, row: int, start: int) -> dict[str, bytes]:
  """{'__key__', ext: bytes, ...} of one sample's bytes; ShardError when they are not the tar
  headers of one sample (the shard changed since it was indexed)."""
  try:
    return _parse_fast(data)
  except _Unusual:
    pass
  record, key = {}, None
  try:
    # The zero blocks end the archive where the last sample's bytes end unpadded.
    with tarfile.open(fileobj=io.BytesIO(data + bytes(2 * tarfile.BLOCKSIZE)), mode="r:") as tar:
      for member in tar:
        if not member.isfile() or os.path.basename(member.name).startswith("."):
          continue
        k = sample_key(member.name)
        if key is None:
          key, record["__key__"] = k, k
        if k != key or member.offset_data + member.size > len(data):
          raise tarfile.TarError(f"member {member.name} is not part of sample {key}")
        ext = os.path.basename(member.name).partition(".")[2].lower()
        record[ext] = data[member.offset_data:member.offset_data + member.size]
  except tarfile.TarError as e:
    raise ShardError(f"{shard} changed since it was indexed: sample {row} at byte {start} does "
                     f"not read as one ({e}); delete {shard}{SUFFIX} (or its copy in the index "
                     "cache) to index it again, or restore the shard") from None
  if key is None:
    raise ShardError(f"{shard} changed since it was indexed: no member at byte {start} (sample "
                     f"{row}); delete {shard}{SUFFIX} to index it again, or restore the shard")
  return record


def _parse_fast(data: bytes) -> dict[str, bytes]:
  record, key, pos = {}, None, 0
  while pos + tarfile.BLOCKSIZE <= len(data):
    header = _header(data[pos:pos + tarfile.BLOCKSIZE])
    if header is None:
      break
    name, n, is_file = header
    start = pos + tarfile.BLOCKSIZE
    if start + n > len(data):
      raise _Unusual
    if _member_of_a_sample(name, is_file):
      k = sample_key(name)
      if key is None:
        key, record["__key__"] = k, k
      if k != key:
        raise _Unusual
      record[os.path.basename(name).partition(".")[2].lower()] = data[start:start + n]
    pos = start + -(-n // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
  if key is None:
    raise _Unusual
  return record


def warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stdout, flush=True)
