"""The trainer: sharded equivalence, end-to-end outputs, exact resume after kill -9, errors."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import evaluate, metrics, pytree, sharding, train
from big_vision_lite.tools import plot
from big_vision_lite.data import loader, shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "siglip_shapes.py")
TINY = [
    "--config.batch_size=16", "--config.model.image.variant=mu/8", "--config.model.image.width=32",
    "--config.model.image.mlp_dim=64", "--config.model.image.depth=1",
    "--config.model.image.num_heads=2", "--config.model.text.width=32",
    "--config.model.text.mlp_dim=64", "--config.model.text.depth=1",
    "--config.model.text.num_heads=2", "--config.model.out_dim=16",
    "--config.model.image.image_size=32", "--config.schedule.warmup_steps=2",
    "--config.evals.zeroshot_shape.num_examples=24", "--config.evals.zeroshot_color.num_examples=24",
    "--config.evals.zeroshot_combo.num_examples=24", "--config.evals.retrieval.num_examples=24",
    "--config.evals.fewshot.num_examples=24", "--config.evals.fewshot.num_train_examples=128",
    "--config.evals.fewshot.shots=(1, 2)", "--config.evals.fewshot.seeds=2",
    "--config.eval_batch_size=16",
]


def tar_input(directory, num_shards=4, per_shard=16) -> list[str]:
  """Config overrides that train on tar shards of shapes images written to `directory`
  (without their index files: the trainer builds them on first use)."""
  from big_vision_lite.tools import make_shards  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel

  def png(ex):
    buf = io.BytesIO()
    Image.fromarray(ex["image"]).save(buf, "PNG")
    return buf.getvalue()

  examples = (shapes.draw(0, "train", i, 32) for i in range(num_shards * per_shard))
  make_shards.write_shards(((f"{i:05d}", png(ex), "png", ex["captions"])
                            for i, ex in enumerate(examples)), str(directory), per_shard)
  for name in os.listdir(directory):
    if name.endswith(".idx"):
      os.remove(os.path.join(directory, name))
  pp = ("decode|flip_lr|value_range(-1,1)|choice(inkey='captions',outkey='text')|tokenize|"
        "keep('image','labels')")
  return [f"--config.input.data={{'name': 'tar', 'pattern': '{directory}'}}",
          f"--config.input.pp={pp}"]


def _tiny_config(*overrides):
  return config_lib.from_args(CONFIG, TINY + list(overrides))


def _run_steps(cfg, mesh, num_steps, accum_steps=1):
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=cfg.model.image.image_size,
                         max_len=cfg.model.text.max_len)
  cfg.grad_accum_steps = accum_steps
  _, _, init_fn, update, _ = train.build(cfg, mesh, 10)
  state = init_fn(jax.random.key(0))
  losses = []
  for _ in range(num_steps):
    state, m = update(state, loader.to_global(next(it), sharding.batch_sharding(mesh)))
    losses.append(float(m["loss"]))
  it.close()
  return losses, jax.device_get(state["params"])


def _assert_params_close(a, b):
  for (name, x), (_, y) in zip(pytree.named_leaves(a), pytree.named_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=name)


# SGD updates are linear in the gradient, so parameters must agree to float32 tolerance. Adam
# divides by sqrt(v): parameters whose gradient is ~0 (biases initialised at 1e-6) take ~lr-sized
# steps whose sign is float32 noise, so with Adam the check is the loss trajectory instead.
@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_step_on_8_devices_equals_1_device(loss):
  assert jax.device_count() == 8
  cfg = _tiny_config(f"--config.loss={loss}", "--config.optax.name=sgd")
  losses1, params1 = _run_steps(cfg, sharding.make_mesh(devices=jax.devices()[:1]), 3)
  losses8, params8 = _run_steps(cfg, sharding.make_mesh(), 3)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  _assert_params_close(params8, params1)


def test_adam_loss_trajectory_on_8_devices_equals_1_device():
  cfg = _tiny_config()
  losses1, _ = _run_steps(cfg, sharding.make_mesh(devices=jax.devices()[:1]), 4)
  losses8, _ = _run_steps(cfg, sharding.make_mesh(), 4)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)


def test_fsdp_sharded_step_equals_replicated():
  cfg = _tiny_config("--config.optax.name=sgd")
  losses_r, params_r = _run_steps(cfg, sharding.make_mesh(), 3)
  cfg.sharding_rules = ((".*", "fsdp"),)
  losses_f, params_f = _run_steps(cfg, sharding.make_mesh((("data", 2), ("fsdp", 4))), 3)
  np.testing.assert_allclose(losses_f, losses_r, rtol=1e-5)
  _assert_params_close(params_f, params_r)


def test_the_update_step_copies_no_parameter_nor_optimiser_state():
  # The non-finite guard once was a select between new and old values over the whole state:
  # XLA copied every parameter and moment each step to keep the old ones (827 copies in a ViT-S
  # step). Skipped under lax.cond, the compiled step copies scalars at most.
  cfg = _tiny_config()
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  _, abstract_state, _, update, _ = train.build(cfg, mesh, 10)
  text = update.lower(abstract_state, train.abstract_batch(cfg, mesh)).compile().as_text()
  entry = text[text.index("\nENTRY "):]
  copied = re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} copy\(", entry[:entry.index("\n}")])
  assert all(int(np.prod([int(d) for d in shape.split(",") if d])) <= 1 for shape in copied), copied


@pytest.mark.parametrize("loss", ["sigmoid", "sigmoid_chunked", "softmax_local"])
def test_gradient_accumulation_equals_the_full_batch(loss):
  cfg = _tiny_config(f"--config.loss={loss}", "--config.optax.name=sgd",
                     "--config.batch_size=32")
  mesh = sharding.make_mesh()
  losses_full, params_full = _run_steps(cfg, mesh, 2)
  losses_acc, params_acc = _run_steps(cfg, mesh, 2, accum_steps=4)
  np.testing.assert_allclose(losses_acc, losses_full, rtol=1e-5)
  _assert_params_close(params_acc, params_full)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run of 4 steps (evaluated at the end): (workdir, returned final metrics)."""
  workdir = tmp_path_factory.mktemp("run")
  results = train.main(["--config", CONFIG, "--workdir", str(workdir)] + TINY + [
      "--config.total_steps=4", "--config.log_training_steps=2", "--config.ckpt_steps=2",
      "--config.eval_steps=4", "--config.keep_ckpts=1"])
  return workdir, results


def test_run_writes_metrics_config_checkpoints_and_tensorboard(trained):
  workdir, results = trained
  for task in ("shapes_shape", "shapes_color", "shapes_combo_heldout"):
    assert 0 <= results[f"zeroshot/{task}/top1"] <= 1
  rows = metrics.read(str(workdir))
  assert [r["step"] for r in rows] == [1, 2, 4]
  for key in ("train/loss", "train/t", "train/b", "train/lr", "train/img_per_sec",
              "train/grad_norm", "train/pos_logit", "train/neg_logit", "train/img2txt_acc",
              "train/txt2img_acc"):
    assert np.isfinite(rows[-1][key]), key
  for key in ("zeroshot/shapes_shape/top1", "retrieval/shapes/img2txt_r@1",
              "retrieval/shapes/txt2img_r@1", "fewshot/shapes_shape/2shot"):
    assert key in rows[-1]
  written = json.load(open(workdir / "config.json"))
  assert written["batch_size"] == 16 and written["optax"]["eps"] == 1e-8  # Resolved: defaults in.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))


def test_standalone_evaluation_reproduces_the_in_training_metrics(trained):
  workdir, results = trained
  in_training = {k: v for k, v in metrics.read(str(workdir))[-1].items()
                 if k.startswith(("zeroshot/", "retrieval/", "fewshot/"))}
  standalone = evaluate.main(["--workdir", str(workdir)])
  assert standalone == in_training == results
  saved = json.load(open(workdir / "eval" / "4.json"))
  assert saved["step"] == 4 and saved["metrics"] == standalone
  with pytest.raises(config_lib.ConfigError, match=r"--evals \['nope'\] not in config.evals"):
    evaluate.main(["--workdir", str(workdir), "--evals", "nope"])


def test_clip_benchmark_json_carries_the_same_numbers(trained):
  workdir, results = trained
  evaluate.main(["--workdir", str(workdir), "--clip_benchmark",
                 "--evals", "retrieval,zeroshot_shape"])
  bench = json.load(open(workdir / "eval" / "clip_benchmark" / "4" / "retrieval.json"))
  assert bench["task"] == "zeroshot_retrieval" and bench["dataset"] == "shapes"
  assert bench["metrics"]["image_retrieval_recall@5"] == results["retrieval/shapes/txt2img_r@5"]
  bench = json.load(open(workdir / "eval" / "clip_benchmark" / "4" / "zeroshot_shape.json"))
  assert bench["metrics"] == {"acc1": results["zeroshot/shapes_shape/top1"],
                              "acc5": results["zeroshot/shapes_shape/top5"],
                              "mean_per_class_recall":
                                  results["zeroshot/shapes_shape/mean_per_class_recall"]}


def test_plots_and_embedding_export(trained):
  workdir, _ = trained
  written = plot.main(["--workdir", str(workdir)])
  names = sorted(os.path.basename(w) for w in written)
  assert names == ["eval_metrics.png", "pca_zeroshot_color.png", "pca_zeroshot_combo.png",
                   "pca_zeroshot_shape.png", "similarity_retrieval.png", "training_curves.png"]
  assert all(os.path.getsize(w) > 10_000 for w in written)
  exported = workdir / "embeddings" / "4"
  assert np.load(exported / "retrieval" / "image_embeddings.npy").shape == (24, 16)
  labels = np.load(exported / "zeroshot_shape" / "labels.npy")
  assert labels.shape == (24,) and labels.dtype.kind == "i"


def test_classifier_with_a_zeroshot_head_starts_at_zero_shot_accuracy(trained):
  """objectives.classify from a contrastive checkpoint with head_init='zeroshot': before any step,
  the head's top-1 on a task equals the checkpoint's zero-shot top-1 on the same images."""
  workdir, _ = trained
  task = "{'type': '%s', 'dataset': 'shapes_position', 'num_examples': 96}"
  zero_shot = evaluate.main(["--workdir", str(workdir), f"--config.evals={{'z': {task % 'zeroshot'}}}"])
  head = evaluate.main([
      "--config", str(workdir / "config.json"),
      "--config.objectives={'classify': {'dataset': 'shapes_position', 'head_init': 'zeroshot'}}",
      f"--config.model_init={workdir / 'checkpoints'}", f"--config.evals={{'c': {task % 'classify'}}}"])
  for metric in ("top1", "top5", "mean_per_class_recall"):
    assert head[f"classify/shapes_position/{metric}"] == zero_shot[f"zeroshot/shapes_position/{metric}"]
  assert zero_shot["zeroshot/shapes_position/top1"] > 0


def test_partial_fine_tuning_and_lora_are_configs_of_the_classifier():
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  common = ["--config.objectives={'classify': {'dataset': 'shapes_size'}}",
            "--config.input.data={'name': 'shapes', 'task': 'shapes_size'}", "--config.evals={}"]
  _, state, _, _, mask = train.build(_tiny_config(*common, "--config.frozen=('img/(?!MAPHead_0).*',)"),
                                     mesh, 10)
  trainable = {n for n, m in pytree.named_leaves(mask) if m}  # The pooling head and classifier.
  assert all(n.startswith(("img/MAPHead_0/", "classifier/")) for n in trainable)
  assert "classifier/kernel" in trainable and any(n.startswith("img/MAPHead_0/") for n in trainable)
  assert state["params"]["classifier"]["kernel"].shape == (16, 2)  # out_dim 16, two sizes.
  _, _, _, _, mask = train.build(_tiny_config(*common, "--config.lora={'rank': 2, 'train': "
                                              "('classifier/.*',)}"), mesh, 10)
  names = {n for n, m in pytree.named_leaves(mask) if m}
  assert names and all(n.startswith(("lora/", "classifier/")) for n in names)
  with pytest.raises(config_lib.ConfigError, match="need a text tower"):
    config_lib.validate(_tiny_config(*common[:2]), 1)


def test_a_resume_with_a_changed_config_is_refused_or_accepted_and_recorded(trained, tmp_path):
  workdir, _ = trained
  before = {f: os.path.getmtime(workdir / f) for f in os.listdir(workdir)}
  # Model shapes never change mid-run, not even when asked; every difference is listed.
  for accept in ([], ["--accept_config_changes"]):
    with pytest.raises(config_lib.ConfigError) as e:
      train.main(["--config", CONFIG, "--workdir", str(workdir)] + TINY + [
          "--config.total_steps=6", "--config.model.image.width=48", "--config.seed=3"] + accept)
    assert "cannot change mid-run:\n  model.image.width: 32 -> 48\n  seed: 0 -> 3\n" in str(e.value)
  # A longer run and another learning rate: refused unless asked for.
  changed = ["--config.total_steps=6", "--config.lr=0.0005"]
  with pytest.raises(config_lib.ConfigError, match=r"(?s)checkpoint at step 4.*\n  lr: 0.001 -> "
                     r"0.0005\n  total_steps: 4 -> 6\nTo go on with the change, add "
                     "--accept_config_changes"):
    train.main(["--config", CONFIG, "--workdir", str(workdir)] + TINY + changed)
  assert before == {f: os.path.getmtime(workdir / f) for f in os.listdir(workdir)}  # Untouched.
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  train.main(["--config", CONFIG, "--workdir", str(copy)] + TINY + changed + [
      "--config.evals={}", "--accept_config_changes"])
  with open(copy / "config_changes.jsonl") as f:
    (record,) = [json.loads(line) for line in f]
  assert record["step"] == 4 and record["changes"]["lr"] == {"old": 0.001, "new": 0.0005}
  assert record["changes"]["total_steps"] == {"old": 4, "new": 6}
  assert json.load(open(copy / "config.json"))["lr"] == 0.0005
  assert [r["step"] for r in metrics.read(str(copy))][-1] == 6


def _final_params(workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return ckpt_lib.Checkpointer(ckpt_dir).latest_step(), ckpt_lib.restore_params(ckpt_dir)


def _train_cmd(workdir, steps, *extra):
  return [sys.executable, "-m", "big_vision_lite.train", "--config", CONFIG, "--workdir",
          str(workdir)] + TINY + [f"--config.total_steps={steps}", "--config.ckpt_steps=4",
                                  "--config.log_training_steps=4", "--config.evals={}",
                                  "--config.keep_ckpts=2", *extra]


def test_resume_after_kill9_reproduces_uninterrupted_run(tmp_path):
  """On tar shards through the grain pipeline (shuffled, augmented), 10 epochs of 64."""
  steps = 40
  env = dict(os.environ, PYTHONPATH=ROOT)
  data = tar_input(tmp_path / "shards")
  subprocess.run(_train_cmd(tmp_path / "straight", steps, *data), check=True, env=env,
                 capture_output=True)
  # Interrupted run: kill -9 as soon as a checkpoint past step 8 is committed.
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_train_cmd(killed, steps, *data), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt_dir = killed / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    done = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
    if any(s >= 8 for s in done):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be interrupted"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  interrupted_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert interrupted_at < steps
  out = subprocess.run(_train_cmd(killed, steps, *data), check=True, env=env,
                       capture_output=True, text=True)
  assert "resumed from" in out.stdout
  step_a, params_a = _final_params(tmp_path / "straight")
  step_b, params_b = _final_params(killed)
  assert step_a == step_b == steps
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  logged = [r["step"] for r in metrics.read(str(killed))]
  assert logged == sorted(set(logged)), "resumed run must not duplicate metric rows"


def _opt_names(abstract_state):
  return [name for name, _ in pytree.named_leaves(abstract_state["opt"])]


@pytest.mark.parametrize("how", ["frozen", "lr_mults"])
def test_frozen_parameters_get_no_gradient_and_no_optimiser_state(how):
  """LiT: the image tower is locked. It has no Adam moments, gets no gradient (the step's
  FLOPs drop by its backward pass), and stays bit-identical while the text tower trains."""
  freeze = ("--config.frozen=('img/.*',)" if how == "frozen" else
            "--config.lr_mults=(('img/.*', 0.0),)")
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  cfg_full, cfg_lit = _tiny_config(), _tiny_config(freeze)
  _, full_state, _, full_update, _ = train.build(cfg_full, mesh, 10)
  _, lit_state, init_fn, lit_update, mask = train.build(cfg_lit, mesh, 10)
  full_names, lit_names = _opt_names(full_state), _opt_names(lit_state)
  assert any("/img/" in n for n in full_names) and not any("/img/" in n for n in lit_names)
  num_leaves = lambda tree: len(jax.tree.leaves(tree))
  frozen = num_leaves(full_state["params"]["img"])
  assert len(full_names) - len(lit_names) == 2 * frozen  # Adam's mu and nu per parameter.
  assert all(not m for m in jax.tree.leaves(mask["img"])) and all(jax.tree.leaves(mask["txt"]))
  flops = lambda update, state: update.lower(state, train.abstract_batch(cfg_full, mesh)
                                             ).cost_analysis()["flops"]
  assert flops(lit_update, lit_state) < 0.8 * flops(full_update, full_state)

  it = loader.make_input(cfg_lit.input, cfg_lit.batch_size, image_size=32, max_len=12)
  state = init_fn(jax.random.key(0))
  before = jax.device_get(state["params"])
  for step in range(2):
    state, _ = lit_update(state, loader.to_global(next(it), sharding.batch_sharding(mesh)))
  after = jax.device_get(state["params"])
  jax.tree.map(np.testing.assert_array_equal, after["img"], before["img"])
  assert not np.array_equal(after["txt"]["head"]["kernel"], before["txt"]["head"]["kernel"])
  it.close()
  with pytest.raises(config_lib.ConfigError, match="every parameter is frozen"):
    train.build(_tiny_config("--config.frozen=('.*',)"), mesh, 10)


def test_lora_trains_only_the_adapters_and_reports_the_count(tmp_path, capsys):
  cfg = _tiny_config("--config.lora={'rank': 2, 'train': ('txt/head/.*',)}")
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  _, abstract_state, init_fn, update, mask = train.build(cfg, mesh, 10)
  trainable = {n for n, m in pytree.named_leaves(mask) if m}
  assert trainable and all(n.startswith(("lora/", "txt/head/")) for n in trainable)
  assert any(n.startswith("txt/head/") for n in trainable)
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=32, max_len=12)
  state = init_fn(jax.random.key(0))
  before = jax.device_get(state["params"])
  for step in range(2):
    state, _ = update(state, loader.to_global(next(it), sharding.batch_sharding(mesh)))
  it.close()
  after = jax.device_get(state["params"])
  for name, value in pytree.named_leaves(after):
    old = dict(pytree.named_leaves(before))[name]
    assert np.array_equal(value, old) != (name in trainable), name
  with pytest.raises(config_lib.ConfigError, match="lora adapts unscanned towers"):
    config_lib.validate(_tiny_config("--config.lora={}", "--config.model.image.scan=True"), 1)
  train.main(["--config", CONFIG, "--workdir", str(tmp_path)] + TINY + [
      "--config.lora={'rank': 2}", "--config.total_steps=2", "--config.evals={}",
      "--config.lr=0.1"])
  assert re.search(r"0\.\d\dM parameters, 0\.0\dM trainable \(\d+\.\d%\)", capsys.readouterr().out)
  # Exported, the adapters are merged into the kernels: a plain model, the same function.
  from big_vision_lite import job, weights  # pylint: disable=import-outside-toplevel
  from big_vision_lite.tools import export  # pylint: disable=import-outside-toplevel
  export.main(["--workdir", str(tmp_path), "--format", "npz", "--output",
               str(tmp_path / "merged.npz")])
  run = config_lib.from_json(str(tmp_path / "config.json"))
  adapted = ckpt_lib.restore_params(str(tmp_path / "checkpoints"))
  merged = weights.load_params(str(tmp_path / "merged.npz"), run.model.to_dict())
  assert "lora" in adapted and "lora" not in merged
  model = job.build_model(run)
  images, tokens = model.example_inputs(4)
  images = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
  tokens = np.random.default_rng(1).integers(1, 200, tokens.shape).astype(np.int32)
  with_adapters = job.apply_fn(run, model)(adapted, images, tokens)
  plain = model.apply({"params": merged}, images, tokens)
  base = model.apply({"params": {k: v for k, v in adapted.items() if k != "lora"}}, images, tokens)
  for a, b, c in zip(with_adapters[:2], plain[:2], base[:2]):
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4  # The adapters did change it.


def test_naflex_training_compiles_the_step_once_per_sequence_length(tmp_path, monkeypatch):
  """Lengths (4, 9) drawn per batch over 3 steps (9, 4, 9 for input seed 3): two compilations,
  one reused, on 8 devices; the evaluators' square images reach the NaFlex model as their whole
  patch grid; a square-image input for the NaFlex model, or the reverse, is refused at start."""
  calls = []
  compile_update = train.compile_update

  def counting(config, mesh, update, abstract_state, seq_len=None, step=0):
    calls.append(seq_len)
    return compile_update(config, mesh, update, abstract_state, seq_len, step)

  monkeypatch.setattr(train, "compile_update", counting)
  naflex = ["--config.model.image.naflex=True", "--config.evals={}",
            "--config.input.data.aspect=2.0", "--config.total_steps=3", "--config.ckpt_steps=3",
            "--config.input.seed=3", "--config.log_training_steps=1"]
  results = train.main(["--config", CONFIG, "--workdir", str(tmp_path / "a")] + TINY + naflex +
                       ["--config.input.seq_lengths=(4, 9)", "--config.evals={'z': {'type': "
                        "'zeroshot', 'dataset': 'shapes_color', 'num_examples': 16}}"])
  assert 0 <= results["zeroshot/shapes_color/top1"] <= 1
  assert calls == [9, 4]  # The longest first (the memory figure), then 4 when it came.
  rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  with pytest.raises(train.sources.DataError, match="naflex=True takes NaFlex patches: set "
                                                    "input.seq_lengths"):
    train.main(["--config", CONFIG, "--workdir", str(tmp_path / "b")] + TINY + naflex)
  with pytest.raises(train.sources.DataError, match="input.seq_lengths patchifies images for a "
                                                    "NaFlex model.*set model.image.naflex=True"):
    train.main(["--config", CONFIG, "--workdir", str(tmp_path / "c")] + TINY +
               ["--config.input.seq_lengths=(4,)", "--config.evals={}"])
