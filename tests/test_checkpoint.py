"""Checkpoints: round trips over 8 devices, and every fault injected for real: damaged files,
wrong shapes, a full disk (a private tmpfs), a checkpoint only one of two processes can read."""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from big_vision_lite import checkpoint as ckpt_lib
from tests.conftest import free_port, process_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(k: int, mesh=None):
  """A train-state-like tree: sharded and replicated leaves, an optimiser tuple, a step."""
  mesh = mesh or jax.make_mesh((8,), ("data",))
  rng = np.random.RandomState(k)
  split, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  return {
      "params": {"img": {"kernel": jax.device_put(rng.randn(256, 16).astype(np.float32), split),
                         "bias": jax.device_put(rng.randn(16).astype(np.float32), rep),
                         "scale": jax.device_put(jnp.asarray(rng.randn(8), jnp.bfloat16), rep)},
                 "t": jax.device_put(np.float32(k), rep)},
      "opt": ({"mu": jax.device_put(rng.randn(256, 16).astype(np.float32), split)},),
      "step": jax.device_put(np.int32(k), rep)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _assert_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def _saved(directory, steps, keep=None):
  ckpt = ckpt_lib.Checkpointer(directory, keep=keep)
  for k in steps:
    ckpt.save(k, _state(k), {"position": k})
  ckpt.close()
  return ckpt


def _data_file(step_dir: str, process: int = 0) -> str:
  """The largest file of the array data one process wrote."""
  return max(glob.glob(os.path.join(step_dir, "state", f"ocdbt.process_{process}", "d", "*")),
             key=os.path.getsize)


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garble(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 3)
    f.write(np.random.RandomState(0).bytes(size // 3))


FAULTS = {
    "truncated data file": (lambda d: _truncate(_data_file(d)), "state: "),
    "garbage in data file": (lambda d: _garble(_data_file(d)), ""),
    "state/_METADATA deleted": (lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
                                "state/_METADATA missing"),
    "data/metadata deleted": (lambda d: os.remove(os.path.join(d, "data", "metadata")),
                              "data/metadata missing"),
}


def test_round_trip_of_a_sharded_state(tmp_path):
  directory = str(tmp_path / "checkpoints")
  ckpt = ckpt_lib.Checkpointer(directory)
  assert ckpt.restore(_abstract(_state(1))) is None  # Nothing saved yet.
  ckpt.save(3, _state(3), {"position": 3})
  ckpt.save(3, _state(4), {"position": 4})  # Already being saved: not written again.
  ckpt.wait()
  assert ckpt.all_steps() == [3] and ckpt.latest_step() == 3
  state, data, step = ckpt.restore(_abstract(_state(1)))
  assert step == 3 and data == {"position": 3}
  _assert_equal(state, _state(3))
  assert state["params"]["img"]["kernel"].sharding == _state(1)["params"]["img"]["kernel"].sharding
  ckpt.close()

  # Onto another topology: a 2x4 mesh, the kernel split over its second axis.
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"))
  other = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(
      mesh, P(None, "fsdp") if x.ndim == 2 else P())), _state(1))
  state, _, _ = ckpt_lib.Checkpointer(directory).restore(other)
  _assert_equal(state, _state(3))
  assert state["opt"][0]["mu"].sharding.spec == P(None, "fsdp")


def test_fingerprints_depend_on_every_value_and_position_not_on_sharding():
  state = _state(1)
  prints = ckpt_lib.fingerprints(state)
  assert set(prints) == {"params/img/kernel", "params/img/bias", "params/img/scale", "params/t",
                         "opt/0/mu", "step"}
  assert ckpt_lib.fingerprints(jax.device_get(state)) == prints  # On one device, from host.
  kernel = np.asarray(state["params"]["img"]["kernel"])
  one_bit = kernel.copy()
  one_bit[3, 5] = np.nextafter(one_bit[3, 5], np.float32(1))
  swapped = kernel.copy()
  swapped[[0, 1]] = swapped[[1, 0]]  # The same values at other positions.
  assert ckpt_lib.fingerprints({"k": kernel})["k"] == prints["params/img/kernel"]
  for changed in (one_bit, swapped):
    assert ckpt_lib.fingerprints({"k": changed})["k"] != prints["params/img/kernel"]
  assert ckpt_lib.fingerprints({"b": jnp.asarray([True, False])}) != ckpt_lib.fingerprints(
      {"b": jnp.asarray([False, True])})


def test_restore_params_to_host_and_onto_a_sharding(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _saved(directory, [1, 2])
  host = ckpt_lib.restore_params(directory)
  assert isinstance(host["img"]["kernel"], np.ndarray)
  _assert_equal(host, _state(2)["params"])
  replicated = NamedSharding(jax.make_mesh((8,), ("data",)), P())
  on_mesh = ckpt_lib.restore_params(directory, 1, replicated)
  assert on_mesh["img"]["kernel"].sharding == replicated
  _assert_equal(on_mesh, _state(1)["params"])
  with pytest.raises(ckpt_lib.CheckpointNotFound, match=r"no checkpoint for step 7 .*\[1, 2\]"):
    ckpt_lib.restore_params(directory, 7)
  with pytest.raises(FileNotFoundError, match="no checkpoint under .*nothing: train first"):
    ckpt_lib.restore_params(str(tmp_path / "nothing"))


def test_keep_n_rotation_and_leftovers_of_a_killed_save(tmp_path):
  directory = str(tmp_path / "checkpoints")
  # What `kill -9` during a save leaves: a temporary directory, never taken for a checkpoint.
  os.makedirs(os.path.join(directory, "9.orbax-checkpoint-tmp", "state"))
  assert ckpt_lib.Checkpointer(directory).all_steps() == []
  ckpt = _saved(directory, [1, 2, 3, 4, 5], keep=2)
  assert ckpt.all_steps() == [4, 5]
  assert sorted(os.listdir(directory)) == ["4", "5"]  # The first save removed the leftover.


@pytest.mark.parametrize("fault", list(FAULTS))
def test_damaged_newest_checkpoint_falls_back_and_its_step_can_be_saved_again(
    tmp_path, capsys, fault):
  directory = str(tmp_path / "checkpoints")
  _saved(directory, [1, 2])
  damage, reason = FAULTS[fault]
  damage(os.path.join(directory, "2"))
  capsys.readouterr()

  ckpt = ckpt_lib.Checkpointer(directory)
  state, data, step = ckpt.restore(_abstract(_state(1)))
  assert step == 1 and data == {"position": 1}
  _assert_equal(state, _state(1))
  warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith(f"warning: checkpoint {directory}/2 is unreadable (")
  assert reason in warnings[0] and f"moved to {directory}.corrupt/2" in warnings[0]
  assert len(warnings[0]) < 2 * len(directory) + 300
  # Kept for inspection, out of the way of the run.
  assert ckpt.all_steps() == [1] and os.listdir(directory + ".corrupt") == ["2"]

  # The resumed run saves step 2 again, and that one restores.
  ckpt.save(2, _state(2), {"position": 2})
  ckpt.wait()
  state, data, step = ckpt.restore(_abstract(_state(1)))
  assert step == 2 and data == {"position": 2}
  _assert_equal(state, _state(2))
  assert capsys.readouterr().out == ""
  ckpt.close()


def test_changed_bytes_that_decode_are_caught_by_the_fingerprints(tmp_path, capsys):
  # Incompressible values are stored verbatim (zstd raw blocks, no checksum): bytes changed on
  # disk then decode to wrong numbers without any error from the storage layer.
  directory = str(tmp_path / "checkpoints")
  bits = np.random.RandomState(0).randint(0, 2**32, size=4096, dtype=np.uint64).astype(np.uint32)
  ckpt = ckpt_lib.Checkpointer(directory)
  for step, values in ((1, bits), (2, bits[::-1].copy())):
    ckpt.save(step, {"params": {"w": jnp.asarray(values)}}, {})
  ckpt.close()
  path = _data_file(os.path.join(directory, "2"))
  with open(path, "rb") as f:
    data = bytearray(f.read())
  at = bytes(data).find(bits[-1].tobytes())
  assert at >= 0, "incompressible values are expected to be stored verbatim"
  data[at:at + 4] = bytes(4)
  with open(path, "wb") as f:
    f.write(data)

  params = ckpt_lib.restore_params(directory)  # Falls back too, moving nothing.
  np.testing.assert_array_equal(params["w"], bits)
  out = capsys.readouterr().out
  assert ("(params/w: data differs from what was saved (fingerprint mismatch)); falling back to "
          "step 1") in out
  assert "moved" not in out and os.path.isdir(os.path.join(directory, "2"))
  with pytest.raises(ckpt_lib.CheckpointUnreadable, match="fingerprint mismatch") as e:
    ckpt_lib.restore_params(directory, 2)
  assert len(str(e.value).splitlines()) == 1


def test_wrong_shapes_are_a_config_error_with_no_fallback(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _saved(directory, [1, 2])
  wrong = _abstract(_state(1))
  wrong["params"]["img"]["bias"] = jax.ShapeDtypeStruct((32,), jnp.float32,
                                                        sharding=wrong["params"]["t"].sharding)
  with pytest.raises(ckpt_lib.CheckpointMismatch) as e:
    ckpt_lib.Checkpointer(directory).restore(wrong)
  message = str(e.value)
  assert f"checkpoint {directory}/2 does not match" in message
  assert "params/img/bias: checkpoint (16,) vs model (32,)" in message
  assert len(message.splitlines()) < 10
  assert sorted(os.listdir(directory)) == ["1", "2"]  # Nothing moved.


def test_no_checkpoint_restores_lists_each_and_moves_nothing(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _saved(directory, [1, 2, 3])
  os.remove(os.path.join(directory, "3", "state", "_METADATA"))
  _truncate(_data_file(os.path.join(directory, "2")))
  with open(os.path.join(directory, "1", "data", "metadata"), "w") as f:
    f.write("{not json")
  with pytest.raises(ckpt_lib.CheckpointUnreadable) as e:
    ckpt_lib.Checkpointer(directory).restore(_abstract(_state(1)))
  lines = str(e.value).splitlines()
  assert len(lines) < 10, lines
  assert lines[0] == f"none of the 3 checkpoints under {directory} restores:"
  assert lines[1] == "  3: state/_METADATA missing"
  assert lines[2].startswith("  2: state: ")
  assert lines[3].startswith("  1: data/metadata: ")
  assert "fresh --workdir" in lines[-1]
  assert sorted(os.listdir(directory)) == ["1", "2", "3"]
  assert not os.path.exists(directory + ".corrupt")
  with pytest.raises(ckpt_lib.CheckpointUnreadable,
                     match=rf"checkpoint {directory}/3 is unreadable \(state/_METADATA missing\)"):
    ckpt_lib.restore_params(directory, 3)


FULL_DISK_SCRIPT = """
import json, os, sys, time
import jax, numpy as np
from big_vision_lite import checkpoint as ckpt_lib

directory = os.path.join(sys.argv[1], "checkpoints")
state = lambda k: {"params": {"w": jax.numpy.asarray(
    np.random.RandomState(k).randn(64 * 1024).astype(np.float32))}, "step": np.int32(k)}
out = {}
ckpt = ckpt_lib.Checkpointer(directory, keep=1)
ckpt.save(1, state(1), {"position": 1})
ckpt.wait()
ckpt.save(2, state(2), {"position": 2})  # Does not fit: fails in the background.
deadline = time.time() + 60
while time.time() < deadline and "check" not in out:
  try:
    ckpt.check()
    time.sleep(0.01)
  except ckpt_lib.CheckpointWriteError as e:
    out["check"], out["exit_code"] = str(e), e.exit_code
out["listed_after_check"] = sorted(os.listdir(directory))
ckpt.save(3, state(3), {"position": 3})
try:
  ckpt.save(4, state(4), {"position": 4})
except ckpt_lib.CheckpointWriteError as e:
  out["save"] = str(e)
ckpt.save(5, state(5), {"position": 5})
try:
  ckpt.close()
except ckpt_lib.CheckpointWriteError as e:
  out["close"] = str(e)
out["listed"] = sorted(os.listdir(directory))
abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
    sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), state(1))
restored, data, step = ckpt_lib.Checkpointer(directory).restore(abstract)
out["restored"] = [step, data, bool(np.array_equal(restored["params"]["w"], state(1)["params"]["w"]))]
print("RESULT " + json.dumps(out))
"""


def test_full_disk_is_reported_and_loses_nothing(tmp_path):
  if shutil.which("unshare") is None:
    pytest.skip("needs unshare (util-linux) for a private tmpfs")
  disk = tmp_path / "disk"
  disk.mkdir()
  script = tmp_path / "full_disk.py"
  script.write_text(FULL_DISK_SCRIPT)
  # 480 KiB: one checkpoint (256 KiB of weights, about 300 KiB in all) fits, two do not.
  proc = subprocess.run(
      ["unshare", "-r", "-m", "sh", "-c",
       f'mount -t tmpfs -o size=480k tmpfs "{disk}" && exec "{sys.executable}" "{script}" "{disk}"'],
      env=process_env(1),
      capture_output=True, text=True, timeout=300)
  if proc.returncode and "RESULT" not in proc.stdout and ("unshare" in proc.stderr
                                                          or "mount" in proc.stderr):
    pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[:200]}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # Only the errors, in two lines.
  out = json.loads(proc.stdout.split("RESULT ", 1)[1])
  directory = f"{disk}/checkpoints"
  for key, step in (("check", 2), ("save", 3), ("close", 5)):
    message = out[key]
    assert len(message.splitlines()) <= 2, message
    assert f"checkpoint of step {step} could not be written to {directory}/{step}: " in message
    assert "No space left on device (errno 28)" in message
    assert " free on that filesystem" in message
    assert "intact (newest: step 1, " in message
  assert out["exit_code"] == 4
  # The partial writes are gone; keep=1 did not delete step 1 for the saves that failed.
  assert out["listed_after_check"] == ["1"] and out["listed"] == ["1"]
  assert out["restored"] == [1, {"position": 1}, True]


TWO_PROCESS_SCRIPT = """
import json, os, sys
import jax, numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from big_vision_lite import checkpoint as ckpt_lib, distributed

directory, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
distributed.initialize(f"127.0.0.1:{port}", 2, pid)
mesh = jax.make_mesh((2,), ("data",))
split = NamedSharding(mesh, P("data"))
def state(k):
  w = np.random.RandomState(k).randn(512, 16).astype(np.float32)
  return {"w": jax.make_array_from_callback(w.shape, split, lambda i: w[i])}
ckpt = ckpt_lib.Checkpointer(directory)
ckpt.save(1, state(1), {"position": 1})
ckpt.save(2, state(2), {"position": 2})
ckpt.wait()
multihost_utils.sync_global_devices("saved")
if pid == 1:  # Only process 1 reads these rows: only it can see the damage.
  files = os.listdir(os.path.join(directory, "2", "state", "ocdbt.process_1", "d"))
  path = max((os.path.join(directory, "2", "state", "ocdbt.process_1", "d", f) for f in files),
             key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
multihost_utils.sync_global_devices("damaged")
abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state(1))
restored, data, step = ckpt.restore(abstract)
same = bool(np.array_equal(np.asarray(restored["w"].addressable_shards[0].data),
                           np.asarray(state(1)["w"].addressable_shards[0].data)))
ckpt.close()
print("RESULT " + json.dumps([step, data, same]), flush=True)
"""


def test_a_checkpoint_one_process_cannot_read_is_abandoned_by_all(tmp_path):
  script = tmp_path / "two.py"
  script.write_text(TWO_PROCESS_SCRIPT)
  port = free_port()
  env = process_env(1)
  directory = tmp_path / "checkpoints"
  procs = [subprocess.Popen([sys.executable, str(script), str(directory), str(port), str(i)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    assert json.loads(out.split("RESULT ", 1)[1]) == [1, {"position": 1}, True]
    assert "Traceback" not in out, out[-3000:]
  warning = [line for line in outs[0].splitlines() if line.startswith("warning:")]
  assert len(warning) == 1, outs[0]
  assert f"{directory}/2 is unreadable (on process 1: state: OUT_OF_RANGE: " in warning[0]
  assert not any(line.startswith("warning:") for line in outs[1].splitlines())
  assert os.listdir(directory) == ["1"] and os.listdir(f"{directory}.corrupt") == ["2"]


def test_an_edited_data_position_is_caught_by_its_fingerprint(tmp_path, capsys):
  directory = str(tmp_path / "checkpoints")
  _saved(directory, [3, 6])
  # Checkpoint 6 given the data position of step 3: it decodes, but would resume elsewhere.
  shutil.copy(os.path.join(directory, "3", "data", "metadata"),
              os.path.join(directory, "6", "data", "metadata"))
  state, data, step = ckpt_lib.Checkpointer(directory).restore(_abstract(_state(6)))
  assert (step, data) == (3, {"position": 3})
  out = capsys.readouterr().out
  assert ("checkpoint " + os.path.join(directory, "6") + " is unreadable (data/metadata (the "
          "input's position): data differs from what was saved (fingerprint mismatch))") in out
  _assert_equal(state, _state(3))
