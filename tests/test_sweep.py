"""Sweeps: expansion and run names, the runner (parallel, skip, resume, a failed run, signals),
the report, the SLURM job array, and the shipped sweep files.

Every sweep here trains the same tiny model with the same loss for the same number of steps
(they differ in initial values), with a compilation cache shared by the whole module, so the
trainer's programs compile once.
"""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from big_vision_lite import config as config_lib
from big_vision_lite import metrics
from big_vision_lite import sweep as sweep_lib
from big_vision_lite.sweep import __main__ as cli
from big_vision_lite.sweep import report, runner, slurm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "siglip_shapes.py")
SWEEPS = os.path.join(ROOT, "configs", "sweeps")
STEPS = 300
TINY = {
    "batch_size": 16, "model.image.variant": "mu/8", "model.image.width": 32,
    "model.image.mlp_dim": 64, "model.image.depth": 1, "model.image.num_heads": 2,
    "model.text.width": 32, "model.text.mlp_dim": 64, "model.text.depth": 1,
    "model.text.num_heads": 2, "model.out_dim": 16, "model.image.image_size": 32,
    "schedule.warmup_steps": 2, "eval_batch_size": 16, "log_training_steps": 50,
    "total_steps": STEPS, "ckpt_steps": 150, "eval_steps": STEPS, "keep_ckpts": 1,
    "evals": {"zeroshot_shape": {"type": "zeroshot", "dataset": "shapes_shape",
                                 "num_examples": 24}},
}
METRICS = ("zeroshot/shapes_shape/top1", "train/loss")
TEMPERATURES = 'product({"model.temperature_init": [5.0, 10.0]})'

SWEEP_FILE = '''
from big_vision_lite.sweep import Sweep, named, product

def get_sweep(arg=None):
  return Sweep(config={config!r}, base={base!r}, points={points}, seeds={seeds!r},
               seed_keys=("seed", "input.data.seed"), metrics={metrics!r}, env={env!r})
'''


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def _sweep_file(path, points: str, jax_cache: str, seeds=(0,), base=None) -> str:
  # One device (not the tests' 8), and the flag a one-core slot adds, so that every run of
  # the module, pinned or not, hits the same compilation cache entries.
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1 "
                      "--xla_cpu_multi_thread_eigen=false",
         "JAX_COMPILATION_CACHE_DIR": jax_cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  with open(path, "w") as f:
    f.write(SWEEP_FILE.format(config=CONFIG, base=base or TINY, points=points, seeds=seeds,
                              metrics=METRICS, env=env))
  return str(path)


def _sweep(**kw) -> sweep_lib.Sweep:
  return sweep_lib.Sweep(config=CONFIG, base=TINY, **kw)


# --- Expansion and names (no training).


def test_product_expansion_names_and_configs():
  sweep = _sweep(points=sweep_lib.product({"model.bias_init": [-10.0, None]},
                                          loss=["sigmoid", "softmax"]),
                 seeds=(0, 7), seed_keys=("seed", "input.data.seed"))
  runs = sweep_lib.expand(sweep)
  assert [r.name for r in runs] == [
      "bias_init=-10,loss=sigmoid,seed=0", "bias_init=-10,loss=sigmoid,seed=7",
      "bias_init=-10,loss=softmax,seed=0", "bias_init=-10,loss=softmax,seed=7",
      "bias_init=none,loss=sigmoid,seed=0", "bias_init=none,loss=sigmoid,seed=7",
      "bias_init=none,loss=softmax,seed=0", "bias_init=none,loss=softmax,seed=7"]
  last = runs[-1]
  assert (last.config.model.bias_init, last.config.loss, last.config.seed,
          last.config.input.data.seed) == (None, "softmax", 7, 7)
  assert last.config.batch_size == 16 and last.total_steps == STEPS
  # The arguments the trainer gets resolve to the same config.
  assert config_lib.from_args(CONFIG, last.argv).to_dict() == last.config.to_dict()
  assert "--config.loss=softmax" in last.argv and "--config.model.bias_init=None" in last.argv

  # A list of points, a derived key (not in the name), values needing a label.
  sweep = _sweep(points=[{"batch_size": 8}, {"batch_size": 32, "optax.name": "sgd"},
                         {"batch_size": 32, "input.data": sweep_lib.named("shapes7", {
                             "name": "shapes", "seed": 7})}],
                 derived=lambda p: {"model.bias_init": -math.log(p["batch_size"])})
  runs = sweep_lib.expand(sweep)
  assert [r.name for r in runs] == ["batch_size=8,seed=0", "batch_size=32,name=sgd,seed=0",
                                    "batch_size=32,data=shapes7,seed=0"]
  assert runs[0].config.model.bias_init == pytest.approx(-math.log(8))
  assert runs[1].config.optax.to_dict() == {"name": "sgd", "momentum": 0.9}
  assert runs[2].config.input.data.seed == 7 and runs[2].point["input.data"]["seed"] == 7


def test_names_are_short_readable_and_safe():
  assert sweep_lib.short_names(["model.image.width", "model.text.width", "lr", "input.seed",
                                "model.bias_init"]) == {
      "model.image.width": "image.width", "model.text.width": "text.width", "lr": "lr",
      "input.seed": "input.seed", "model.bias_init": "bias_init"}
  assert [sweep_lib.render(v) for v in (1e-3, 1e-5, -math.log(128), 10.0, 64, True, None,
                                        "mu/16", (16, 16), "a,b=c", "")] == [
      "0.001", "1e-05", "-4.85203", "10", "64", "true", "none", "mu_16", "16_16", "a_b_c",
      "empty"]
  with pytest.raises(sweep_lib.SweepError, match="same run name 'lr=0.001,seed=0'"):
    sweep_lib.expand(_sweep(points=sweep_lib.product(lr=[1e-3, 1.0000001e-3])))
  with pytest.raises(sweep_lib.SweepError, match=r"axes \['seed'\] clash with the seeds"):
    sweep_lib.expand(_sweep(points=sweep_lib.product(seed=[1, 2])))
  with pytest.raises(sweep_lib.SweepError, match="label 'a/b'"):
    sweep_lib.named("a/b", 1)


def test_a_typo_or_a_bad_value_fails_at_expansion_naming_the_run():
  with pytest.raises(config_lib.ConfigError,
                     match=r"run bias_int=0,seed=0: unknown config key 'model.bias_int' "
                           r"\(did you mean 'model.bias_init'\?\)"):
    sweep_lib.expand(_sweep(points=sweep_lib.product({"model.bias_int": [0.0]})))
  with pytest.raises(config_lib.ConfigError, match=r"run loss=sigmod,seed=0: config.loss='sigmod' "
                                                   r"is not one of"):
    sweep_lib.expand(_sweep(points=sweep_lib.product(loss=["sigmoid", "sigmod"])))
  with pytest.raises(config_lib.ConfigError, match="run total_steps=none,seed=0: set "
                                                   "config.total_steps"):
    sweep_lib.expand(_sweep(points=sweep_lib.product(total_steps=[None])))


def test_full_scale_sweeps_dry_run(capsys, tmp_path):
  """The cluster sweeps are never run here: their dry runs must list the paper's grid."""
  shards = "shards=/data/webli/shards-{00000..09999}.tar,imagenet=/data/tfds"
  assert cli.main([f"{SWEEPS}/siglip_loss_batch_full.py:{shards}",
                   "--workdir", str(tmp_path / "a"), "--dry_run"]) == 0
  out = capsys.readouterr().out
  batches = (512, 1024, 2048, 4096, 8192, 16384, 32768)
  names = re.findall(r"^\[ ?\d+\] (\S+):", out, re.M)
  assert names == [f"loss={loss},batch_size={b},seed=0" for loss in ("sigmoid", "softmax")
                   for b in batches]
  assert "27466 steps of batch 32768 (900,005,888 examples)" in out
  assert "config: " + os.path.join(ROOT, "configs", "siglip_b16.py") + \
      ":shards=/data/webli/shards-{00000..09999}.tar\n" in out
  assert "metrics: zeroshot/imagenet2012/top1" in out and "'data_dir': '/data/tfds'" in out
  assert cli.main([f"{SWEEPS}/siglip_bias_temperature_full.py:{shards}",
                   "--workdir", str(tmp_path / "b"), "--dry_run"]) == 0
  out = capsys.readouterr().out
  names = re.findall(r"^\[\d+\] (\S+):", out, re.M)
  assert names[:5] == ["bias_init=-10,temperature_init=10,seed=0",
                       "bias_init=none,temperature_init=10,seed=0",
                       "bias_init=0,temperature_init=10,seed=0",
                       "bias_init=-10,temperature_init=1,seed=0",
                       "bias_init=0,temperature_init=1,seed=0"]
  assert "109863 steps of batch 8192" in out
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_laptop_sweeps():
  """The shipped laptop ablations: their grids, run lengths and derived keys."""
  load = lambda name: sweep_lib.expand(sweep_lib.load(os.path.join(SWEEPS, name)))
  runs = load("siglip_bias_temperature.py")
  assert len(runs) == 6 * 3 and {r.total_steps for r in runs} == {500}
  by_name = {r.name: r.config for r in runs}
  assert by_name["bias_init=-log128,temperature_init=10,seed=2"].model.bias_init == \
      pytest.approx(-math.log(128))
  assert by_name["bias_init=none,temperature_init=10,seed=0"].model.bias_init is None
  assert by_name["bias_init=0,temperature_init=1,seed=1"].model.temperature_init == 1.0

  runs = load("siglip_loss_batch.py")
  assert len(runs) == 2 * 4 * 3
  for r in runs:  # The same examples seen at every batch size, the warmup a fixed share.
    assert r.total_steps * r.config.batch_size == r.config.total_examples == 64_000
    assert r.config.schedule.warmup_examples == 6_400
    sigmoid = r.config.loss == "sigmoid"
    assert r.config.model.bias_init == (pytest.approx(-math.log(r.config.batch_size))
                                        if sigmoid else None)

  sweep = sweep_lib.load(os.path.join(SWEEPS, "siglip_chunked.py"))
  runs = sweep_lib.expand(sweep)
  assert [r.config.loss for r in runs] == ["sigmoid"] * 3 + ["sigmoid_chunked"] * 3
  assert {r.total_steps for r in runs} == {250}
  assert sweep.env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
  assert sweep_lib.load(os.path.join(SWEEPS, "siglip_chunked.py:examples=1280,seeds=1")).seeds \
      == (0,)


# --- Running.


def test_slots_pin_cores_and_cap_threads(tmp_path):
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    pytest.skip("needs 2 cores")
  slots = runner.make_slots(2, "cpu")
  assert [len(s.cores) for s in slots] in ([len(cores) // 2, len(cores) - len(cores) // 2],)
  assert set(slots[0].cores) | set(slots[1].cores) == set(cores)
  assert not set(slots[0].cores) & set(slots[1].cores)
  with pytest.raises(sweep_lib.SweepError, match="needs at least"):
    runner.make_slots(len(cores) + 1, "cpu")
  one = runner.Slot(0, cores=(cores[-1],))
  env = runner.merge_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --a=1"},
                         {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, one.env())
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", "--a=1",
                                      "--xla_cpu_multi_thread_eigen=false"]
  # What a child process really gets.
  probe = "import os; print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])"
  log = tmp_path / "log.txt"
  proc = runner.launch([sys.executable, "-c", probe], env, str(log), one.cores)
  assert proc.wait(timeout=60) == 0
  assert log.read_text().splitlines()[-1] == f"[{cores[-1]}] 1"
  assert runner.make_slots(1) == [runner.Slot(0)] and runner.Slot(0).env() == {}


def test_gpu_slots_split_the_visible_gpus(monkeypatch, capsys):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
  assert [s.env() for s in runner.make_slots(2)] == [{"CUDA_VISIBLE_DEVICES": "3,5"},
                                                     {"CUDA_VISIBLE_DEVICES": "6,7"}]
  assert [s.gpus for s in runner.make_slots(3, "gpu")] == [("3",), ("5",), ("6",)]
  assert "4 GPUs do not split evenly into 3; 1 stay idle" in capsys.readouterr().out
  with pytest.raises(sweep_lib.SweepError, match="needs at least 5 GPUs; 4 visible"):
    runner.make_slots(5)
  if len(os.sched_getaffinity(0)) >= 2:  # Told to split the CPU instead.
    assert all(s.cores for s in runner.make_slots(2, "cpu"))
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
  with pytest.raises(sweep_lib.SweepError, match="--platform gpu: no GPU found"):
    runner.make_slots(2, "gpu")


def test_eta_from_finished_runs_or_the_pace_of_running_ones(tmp_path):
  writer = metrics.Writer(str(tmp_path), tensorboard=False)
  writer.write(50, {"train/loss": 1.0})
  now = time.time()
  running = runner._Running({"total_steps": 100}, runner.Slot(0), None, now - 10.0,
                            str(tmp_path), 0)
  assert running.projection(now) == pytest.approx((10.0, 20.0))
  # 2 waiting runs of 20 s (projected) + 10 s left, over 2 slots; then with a finished run's 30 s.
  assert runner._eta([], [running], 2, 2, now) == pytest.approx(25.0)
  assert runner._eta([30.0], [running], 2, 2, now) == pytest.approx(35.0)
  resumed = runner._Running({"total_steps": 100}, runner.Slot(0), None, now - 10.0,
                            str(tmp_path), 50)
  assert resumed.projection(now) is None and runner._eta([], [resumed], 1, 1, now) is None
  assert runner._eta([30.0], [resumed], 0, 1, now) == pytest.approx(20.0)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, jax_cache):
  """A 2 x 2-run sweep (two initial temperatures, two seeds) run with --parallel 2."""
  tmp = tmp_path_factory.mktemp("sweep")
  spec = _sweep_file(tmp / "tiny.py", TEMPERATURES, jax_cache, seeds=(0, 1))
  directory = str(tmp / "out")
  out = subprocess.run([sys.executable, "-m", "big_vision_lite.sweep", spec, "--workdir",
                        directory, "--parallel", "2"], env=dict(os.environ, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=600)
  return spec, directory, out


def test_local_sweep_runs_in_parallel_and_skips_finished_runs(finished_sweep, capsys):
  spec, directory, out = finished_sweep
  assert out.returncode == 0, out.stdout + out.stderr
  if len(os.sched_getaffinity(0)) >= 2:
    assert "4 runs: 0 finished, 4 to run, 2 at a time (core" in out.stdout
  assert re.search(r"4/4 done, 0 running, 0 failed, 0 waiting \| ETA 0s\nfinished 4/4", out.stdout)
  names = ["temperature_init=10,seed=0", "temperature_init=10,seed=1",
           "temperature_init=5,seed=0", "temperature_init=5,seed=1"]
  assert sorted(d for d in os.listdir(directory) if "=" in d) == names
  for name in names:
    run_dir = os.path.join(directory, name)
    assert json.load(open(os.path.join(run_dir, "done.json")))["total_steps"] == STEPS
    assert metrics.read(run_dir)[-1]["step"] == STEPS
    log = open(os.path.join(run_dir, "log.txt")).read()
    assert f"--workdir {run_dir}" in log and "final evaluation:" in log
    attempt, = sweep_lib.attempts(run_dir)
    assert attempt["exit_code"] == 0 and 0 < attempt["cpu_seconds"] and 0 < attempt["seconds"]
  config = json.load(open(os.path.join(directory, "temperature_init=5,seed=1", "config.json")))
  assert (config["model"]["temperature_init"], config["seed"],
          config["input"]["data"]["seed"]) == (5.0, 1, 1)

  # The same command again: nothing runs.
  start = time.time()
  assert cli.main([spec, "--workdir", directory, "--parallel", "2"]) == 0
  out = capsys.readouterr().out
  assert "4 runs: 4 finished, 0 to run" in out and "start " not in out
  assert time.time() - start < 30
  assert all(len(sweep_lib.attempts(os.path.join(directory, n))) == 1 for n in names)
  assert cli.main([spec, "--workdir", directory, "--dry_run"]) == 0
  assert capsys.readouterr().out.count(f": finished; {STEPS} steps of batch 16") == 4

  # A changed sweep is refused for the runs it would change, before anything runs.
  changed = _sweep_file(os.path.join(os.path.dirname(spec), "changed.py"), TEMPERATURES,
                        "/unused", seeds=(0, 1), base={**TINY, "lr": 5e-4})
  with pytest.raises(sweep_lib.SweepError, match=r"4 run\(s\) in .* were started with a "
                                                 r"different config.*\n  temperature_init=5,"
                                                 r"seed=0: lr"):
    cli.main([changed, "--workdir", directory])


def test_report_of_the_sweep(finished_sweep, tmp_path):
  _, directory, _ = finished_sweep
  written = report.main([directory, "--out", str(tmp_path)])
  assert sorted(os.path.basename(w) for w in written) == [
      "curves.png", "metrics.png", "results.csv", "results.md"]
  assert all(os.path.getsize(w) > 10_000 for w in written if w.endswith(".png"))
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["temperature_init"], r["seed"]) for r in rows] == [
      ("5", "0"), ("5", "1"), ("10", "0"), ("10", "1")]
  # Each run's final values are the last ones in its metrics.jsonl.
  final = {}
  for r in rows:
    logged = metrics.read(os.path.join(directory, r["run"]))
    for m in METRICS:
      assert float(r[m]) == [row[m] for row in logged if m in row][-1]
    final.setdefault(r["temperature_init"], []).append([float(r[m]) for m in METRICS])
  md = (tmp_path / "results.md").read_text()
  assert "4 of 4 runs finished" in md and "## Missing" not in md
  for temperature, values in final.items():
    v = np.array(values)
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(v.mean(0), v.std(0, ddof=1))]
    assert f"| {temperature} | {' | '.join(cells)} | 2 |" in md
  assert "![metrics](metrics.png)" in md and "![curves](curves.png)" in md


def _trainer_of(runner_pid: int, run_dir) -> int:
  """The pid of the runner's child that trains in `run_dir`."""
  with open(f"/proc/{runner_pid}/task/{runner_pid}/children") as f:
    for pid in f.read().split():
      with open(f"/proc/{pid}/cmdline", "rb") as cmd:
        if str(run_dir).encode() in cmd.read().split(b"\0"):
          return int(pid)
  raise AssertionError(f"no trainer of {run_dir} under {runner_pid}")


def _wait_for(condition, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not condition():
    time.sleep(0.01)
  assert proc.poll() is None, proc.communicate()[0]


def test_failed_and_interrupted_runs_then_resume(tmp_path, jax_cache):
  """One run fails (non-finite loss: exit 3) without stopping the other; SIGTERM to the runner
  makes the other save and stop (exit 75: unfinished, not failed); the same command resumes it
  from its checkpoint. A second runner on the same directory is refused meanwhile."""
  spec = _sweep_file(tmp_path / "faults.py",
                     '[{"model.temperature_init": 1e38}, {"model.temperature_init": 10.0}]',
                     jax_cache, base={**TINY, "max_nonfinite_steps": 2})
  directory = tmp_path / "out"
  command = [sys.executable, "-m", "big_vision_lite.sweep", spec, "--workdir", str(directory),
             "--parallel", "2"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  bad, good = directory / "temperature_init=1e+38,seed=0", directory / "temperature_init=10,seed=0"
  proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  try:
    _wait_for(lambda: (good / "checkpoints").exists() and any(
        d.isdigit() for d in os.listdir(good / "checkpoints")), proc)
    trainer = _trainer_of(proc.pid, good)
    os.kill(trainer, signal.SIGSTOP)  # Holds the run mid-way while the test looks around.
    _wait_for(lambda: sweep_lib.attempts(str(bad)), proc)  # The failure is recorded.
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "in use by another sweep runner" in second.stderr
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    os.kill(trainer, signal.SIGCONT)
    out = proc.communicate(timeout=300)[0]
  finally:
    if proc.poll() is None:  # Its runs get SIGTERM when it dies.
      proc.kill()
      proc.wait()
  assert proc.returncode == 1, out
  assert f"FAILED {bad.name}" in out and f"exit 3 (non-finite loss): see {bad}/log.txt" in out
  assert sweep_lib.attempts(str(good))[-1]["exit_code"] == 75
  stopped_at = sweep_lib.attempts(str(good))[-1]["checkpoint"]
  assert 150 <= stopped_at < STEPS
  assert (f"stopped {good.name} after" in out and "exit 75" in out and
          f"resumes it from its checkpoint at step {stopped_at}" in out)
  assert sweep_lib.run_status(str(good), STEPS).state == "unfinished"

  # The report of the partial sweep says what is missing and why.
  report.main([str(directory)])
  md = (directory / "results.md").read_text()
  assert "0 of 2 runs finished" in md
  assert f"- `{good.name}`: unfinished, checkpoint at step {stopped_at}/{STEPS}" in md
  assert f"- `{bad.name}`: failed: exit 3 (non-finite loss): see {bad}/log.txt\n" in md

  # Again: the failed run fails again, the stopped one resumes and finishes.
  again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 1, again.stdout
  assert f"done  {good.name}" in again.stdout
  assert sweep_lib.run_status(str(good), STEPS).state == "finished"
  log = (good / "log.txt").read_text()
  assert re.search(rf"resumed from .*/checkpoints/{stopped_at}\n", log), log
  assert [r["step"] for r in metrics.read(str(good))][-1] == STEPS

  # The marker alone is not trusted: metrics cut short make the run unfinished again.
  rows = (good / "metrics.jsonl").read_text().splitlines(keepends=True)
  (good / "metrics.jsonl").write_text("".join(rows[:-1]) + rows[-1][:20])
  assert sweep_lib.run_status(str(good), STEPS).state == "unfinished"


def test_slurm_array_script_runs_one_task_per_run(tmp_path, jax_cache, capsys):
  spec = _sweep_file(tmp_path / "s.py", TEMPERATURES, jax_cache, seeds=(0, 1))
  directory = tmp_path / "out"
  assert cli.main([spec, "--workdir", str(directory), "--slurm", "--parallel", "3",
                   "--sbatch", "time=1:00:00"]) == 0
  script = directory / "slurm" / "array.sbatch"
  assert f"submit with: sbatch {script}" in capsys.readouterr().out
  text = script.read_text()
  assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
  assert "#SBATCH --array=0-3%3" in text and "#SBATCH --time=1:00:00" in text
  # launch/slurm.sh's own options: resources, SIGTERM before the time limit, requeue.
  for option in ("--gpus-per-node=8", "--signal=TERM@300", "--requeue", "--open-mode=append"):
    assert f"#SBATCH {option}\n" in text
  manifest = sweep_lib.read_manifest(str(directory))
  listed = re.findall(r"^  \[(\d+)\]=(\S+)$", text, re.M)
  assert [(int(i), n.strip("'")) for i, n in listed] == [
      (i, r["name"]) for i, r in enumerate(manifest["runs"])]

  # Task 2 as SLURM would run it (srun replaced by a shim that runs its command here).
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\n'
                                'exec "$@"\n')
  (bin_dir / "srun").chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="2",
             PYTHONPATH=ROOT)
  out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  name = manifest["runs"][2]["name"]
  assert name == "temperature_init=10,seed=0"
  assert [sweep_lib.run_status(str(directory / r["name"]), STEPS).state
          for r in manifest["runs"]] == ["pending", "pending", "finished", "pending"]
  assert "final evaluation:" in (directory / name / "log.txt").read_text()
  # Written again, the array holds only the unfinished runs.
  assert cli.main([spec, "--workdir", str(directory), "--slurm"]) == 0
  assert "#SBATCH --array=0-1,3\n" in script.read_text()
  assert slurm.array_spec([0, 1, 2, 5, 7, 8], 4) == "0-2,5,7-8%4"


def test_a_killed_runners_attempt_is_recorded_by_the_next_one(tmp_path):
  """kill -9 of the runner: its trainer gets SIGTERM (parent-death signal), saves and exits 75
  while no runner watches. The attempt marker it left makes the next runner wait for that
  trainer, then record the attempt from the log's `stopped:` line."""
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / sweep_lib.LOG).write_text("\n=== 2026-12-07 01:00:00 python -m big_vision_lite.train"
                                       "\nstep 150/300 | loss 1.0\n")
  # A stand-in for the trainer: still saving when the next runner starts, then stopped.
  trainer = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; time.sleep(1.0); open(sys.argv[1] + '/log.txt', 'a').write("
      "'stopped: SIGTERM at step 151/300; checkpoint saved.\\n')"), str(run_dir)])
  while str(run_dir).encode() not in open(f"/proc/{trainer.pid}/cmdline", "rb").read():
    time.sleep(0.01)  # Until it has started.
  sweep_lib.begin_attempt(str(run_dir), trainer.pid, time.time() - 5)
  status = sweep_lib.recover_attempt(str(run_dir), STEPS, poll_sec=0.05)
  # It waited for the trainer to end: the attempt's exit comes from the line the trainer wrote
  # just before exiting (its process may still be being torn down here).
  assert trainer.wait(timeout=60) == 0
  (row,) = sweep_lib.attempts(str(run_dir))
  assert row["exit_code"] == 75 and row["seconds"] >= 5 and "reason" not in row
  assert status.state == "unfinished" and not (run_dir / sweep_lib.RUNNING).exists()
  assert sweep_lib.recover_attempt(str(run_dir), STEPS) is None  # Recorded once.
  # A trainer that ended without a word (the machine went down): recorded, exit not known,
  # and the run is resumable, not failed.
  sweep_lib.begin_attempt(str(run_dir), trainer.pid, time.time())
  with open(run_dir / sweep_lib.LOG, "a") as f:
    f.write("\n=== 2026-12-07 01:10:00 python -m big_vision_lite.train\nstep 200/300\n")
  status = sweep_lib.recover_attempt(str(run_dir), STEPS)
  row = sweep_lib.attempts(str(run_dir))[-1]
  assert row["exit_code"] is None and row["reason"].endswith("its log ends with: step 200/300")
  assert status.state == "unfinished"


def test_paired_differences_match_seed_by_seed_and_name_unknown_points():
  from big_vision_lite.sweep import report  # pylint: disable=import-outside-toplevel
  runs = [{"name": f"obj={p},seed={s}", "labels": {"objectives": p}, "seed": s, "total_steps": 1}
          for p in ("a", "b") for s in (0, 1, 2)]
  values = {("a", 0): 0.5, ("a", 1): 0.7, ("a", 2): 0.9, ("b", 0): 0.6, ("b", 1): 0.9}
  results = [report.Result(r, [], {"m": values[(r["labels"]["objectives"], r["seed"])]}, 1.0)
             for r in runs if (r["labels"]["objectives"], r["seed"]) in values]
  c = report.Collected({"axes": {"objectives": "obj"}, "runs": runs}, results, [], ["m"])
  n, stats = report.paired(c, "b", "a")  # Seed 2 of b is missing: seeds 0 and 1 only.
  assert n == 2 and stats["m"][0] == pytest.approx(0.15) and stats["m"][2] == 2
  assert stats["m"][1] == pytest.approx(np.std([0.1, 0.2], ddof=1))
  with pytest.raises(sweep_lib.SweepError, match="no point 'c'.*'a', 'b'"):
    report.paired(c, "c", "a")
