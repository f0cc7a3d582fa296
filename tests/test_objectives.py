"""Objectives with LocCa on: sharded equals one device, accumulation equals the full batch,
resume is exact, per-term metrics, late-starting terms, and bad input caught before any step."""

import jax
import numpy as np
import pytest

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import job, pytree, sharding, train
from big_vision_lite.data import loader, sources
from tests.test_train import CONFIG, TINY, _assert_params_close

LOCCA = ["--config.objectives={'contrastive': {}, 'locca': {'weight': 0.5}}",
         "--config.optax.name=sgd", "--config.lr=0.3", "--config.schedule.decay_type=constant",
         "--config.evals={}"]


def _cfg(*overrides):
  return config_lib.from_args(CONFIG, TINY + LOCCA + list(overrides))


def _steps(cfg, mesh, num_steps, state=None, it=None, update=None):
  """(per-step metrics, state, input, update) after `num_steps` more steps."""
  if update is None:
    _, _, init_fn, update, _ = train.build(cfg, mesh, 40)
    state = init_fn(jax.random.key(0)) if state is None else state
  if it is None:
    it = loader.make_input(cfg.input, cfg.batch_size, image_size=cfg.model.image.image_size,
                           max_len=cfg.model.text.max_len)
  keys = train.step_batch(cfg, it.element_spec)
  rows = []
  for _ in range(num_steps):
    local = next(it)
    state, m = update(state, loader.to_global({k: local[k] for k in keys},
                                              sharding.batch_sharding(mesh)))
    rows.append({k: float(v) for k, v in jax.device_get(m).items()})
  return rows, state, it, update


def test_locca_on_8_devices_accumulating_equals_1_device_and_logs_each_term():
  """8 devices accumulating 2 micro-batches give 1 device's full-batch losses and parameters
  (SGD: updates are linear in the gradient): the sharded step and the accumulation are both
  exact with the decoder."""
  cfg = _cfg()
  rows1, state1, it, _ = _steps(cfg, sharding.make_mesh(devices=jax.devices()[:1]), 2)
  it.close()
  cfg.grad_accum_steps = 2
  rows8, state8, it, _ = _steps(cfg, sharding.make_mesh(), 2)
  it.close()
  for key in ("loss", "loss_contrastive", "loss_locca", "locca_caption"):
    np.testing.assert_allclose([r[key] for r in rows8], [r[key] for r in rows1], rtol=1e-4,
                               err_msg=key)
  for r in rows1:  # The weighted sum; the decoder starts at uniform logits over its vocabulary.
    np.testing.assert_allclose(r["loss"], r["loss_contrastive"] + 0.5 * r["loss_locca"],
                               rtol=1e-6)
  vocab = 256 + 3 + 100  # Text ids, task tokens, location tokens.
  np.testing.assert_allclose(rows1[0]["locca_referring"], np.log(vocab), rtol=1e-5)
  assert rows1[1]["loss_locca"] < rows1[0]["loss_locca"]
  _assert_params_close(jax.device_get(state8["params"]), jax.device_get(state1["params"]))
  assert state8["params"]["dec"]["head"]["kernel"].shape == (32, vocab)


def test_resume_with_the_decoder_is_exact(tmp_path):
  """20 steps, a checkpoint, a fresh start restoring it, 20 more == 40 steps straight (the
  random parallel-prediction draws come from the step, the input state from the checkpoint)."""
  cfg = _cfg("--config.objectives.locca.start=0.25")  # Starts at step 10 of 40.
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  straight, state_a, it, update = _steps(cfg, mesh, 40)
  it.close()
  assert straight[9]["loss"] == straight[9]["loss_contrastive"]  # Before its start: weight 0.
  assert straight[10]["loss"] > straight[10]["loss_contrastive"]
  _, state, it, _ = _steps(cfg, mesh, 20, update=update, state=train.build(cfg, mesh, 40)[2](
      jax.random.key(0)))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(20, state, it.get_state())
  ckpt.wait()
  it.close()
  _, abstract_state, _, _, _ = train.build(cfg, mesh, 40)
  restored, data_state, step = ckpt.restore(abstract_state)
  ckpt.close()
  assert step == 20 and "dec" in restored["params"]
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=cfg.model.image.image_size,
                         max_len=cfg.model.text.max_len)
  it.set_state(data_state)
  resumed, state_b, it, _ = _steps(cfg, mesh, 20, state=restored, it=it, update=update)
  it.close()
  assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[20:]]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state_b["params"]),
               jax.device_get(state_a["params"]))


def test_bad_objectives_fail_before_any_step():
  cfg = _cfg("--config.objectives.locca.vocab_size=100")
  with pytest.raises(config_lib.ConfigError, match=r"objectives.locca.vocab_size=100 is smaller "
                     r"than the tokenizer's 256 pieces"):
    job.check_vocab(cfg)
  # LocCa on classification data: no captions, no regions.
  cfg = _cfg("--config.input.data={'name': 'shapes', 'task': 'shapes_size'}")
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=32, max_len=12)
  with pytest.raises(sources.DataError, match=r"objectives.\w+ reads .*token ids \('labels'\), "
                     r"which the input does not give \(it gives \['image', 'label'\]\)"):
    train.step_batch(cfg, it.element_spec)
  it.close()
  spec = {"image": ((16, 32, 32, 3), np.float32), "labels": ((16, 12), np.int32)}
  with pytest.raises(sources.DataError, match=r"objectives.locca reads region caption token ids "
                     r"\('region_labels'\).*objectives.locca.regions=False"):
    train.step_batch(cfg, spec)
  assert train.step_batch(_cfg("--config.objectives.locca.regions=False"), spec) == [
      "image", "labels"]


def test_siglip2_shapes_trains_and_evaluates_the_decoder(tmp_path):
  """The shipped recipe, tiny: per-term losses logged, the decoder's evaluators run."""
  config = CONFIG.replace("siglip_shapes.py", "siglip2_shapes.py")
  evals = {"captioning": {"type": "captioning", "dataset": "shapes", "num_examples": 16},
           "referring": {"type": "referring", "dataset": "shapes", "num_examples": 16},
           "dense": {"type": "dense_probe", "dataset": "shapes", "num_examples": 16,
                     "num_train_examples": 64}}
  results = train.main(["--config", config, "--workdir", str(tmp_path)] + TINY + [
      "--config.total_steps=1", f"--config.evals={evals!r}"])
  from big_vision_lite import metrics  # pylint: disable=import-outside-toplevel
  row = metrics.read(str(tmp_path))[-1]
  np.testing.assert_allclose(row["train/loss"], row["train/loss_contrastive"]
                             + row["train/loss_locca"], rtol=1e-5)
  for key in ("captioning/shapes/exact_match", "referring/shapes/acc@0.5",
              "referring/shapes/mean_iou", "dense_probe/shapes/accuracy",
              "dense_probe/shapes/mean_iou"):
    assert 0 <= results[key] <= 1, key
  assert results["captioning/shapes/length"] >= 0


def test_decoder_parameters_follow_the_parameter_name_rules():
  """`dec/...` is frozen, sharded and counted like the towers' parameters (no compilation)."""
  mesh = sharding.make_mesh((("data", 2), ("fsdp", 4)))
  _, state, _, _, mask = train.build(_cfg("--config.frozen=('dec/.*',)",
                                          "--config.sharding_rules=(('dec/.*', 'fsdp'),)"),
                                     mesh, 10)
  assert not any(jax.tree.leaves(mask["dec"])) and all(jax.tree.leaves(mask["img"]))
  assert not any("/dec/" in n for n, _ in pytree.named_leaves(state["opt"]))
  kernel = state["params"]["dec"]["head"]["kernel"]
  assert "fsdp" in jax.tree.leaves(tuple(kernel.sharding.spec))
