"""Self-distillation (silc, tips) with the EMA teacher, every term on: 8 devices equal 1 across
the start step, the teacher moves only as the EMA of the student, resume across the start step is
exact, and bad settings fail at start."""

import json
import re

import jax
import numpy as np
import pytest

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import objectives, pytree, sharding, train
from big_vision_lite.data import loader
from big_vision_lite.objectives import teacher as teacher_lib
from tests.test_objectives import _steps
from tests.test_train import CONFIG, TINY

HEAD = "'head_dim': 64, 'head_hidden': 32, 'head_bottleneck': 16"
ALL = [  # 4 steps; silc and tips start at step 1.
    "--config.objectives={'contrastive': {}, 'locca': {'weight': 0.5}, "
    f"'silc': {{'start': 0.25, {HEAD}}}, 'tips': {{'start': 0.25, 'weight': 0.25, {HEAD}}}}}",
    "--config.teacher.local_size=16", "--config.teacher.local_views=2",
    "--config.teacher.momentum=0.9", "--config.optax.name=sgd", "--config.lr=0.3",
    "--config.schedule.decay_type=constant", "--config.evals={}"]
KEYS = ("loss", "loss_contrastive", "loss_locca", "loss_silc", "loss_tips")


def _cfg(*overrides):
  return config_lib.from_args(CONFIG, TINY + ALL + list(overrides))


def _state(state):
  return jax.tree.map(np.asarray, jax.device_get(state))


def test_every_term_on_8_devices_equals_1_device_and_resumes_exactly_across_the_start(tmp_path):
  cfg = _cfg()
  mesh1, mesh8 = sharding.make_mesh(devices=jax.devices()[:1]), sharding.make_mesh()
  _, abstract1, init1, update1, _ = train.build(cfg, mesh1, 4)
  # Every term is compiled into the steps from step 1 on (the phase after the start).
  assert update1.boundaries == [1]
  compiled = update1.lower(abstract1, train.abstract_batch(cfg, mesh1), 1).compile()
  # The EMA runs in place: the compiled step copies no weight matrix of the parameters, the
  # moments or the teacher (a select over them would copy each); only vectors and scalars
  # (random keys, a few biases).
  entry = compiled.as_text()[compiled.as_text().index("\nENTRY "):]
  copied = re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} copy\(", entry[:entry.index("\n}")])
  assert copied and all(shape.count(",") == 0 for shape in copied), copied
  rows1, state1, it, _ = _steps(cfg, mesh1, 3, state=init1(jax.random.key(0)), update=update1)
  it.close()
  # 8 devices: one step, a checkpoint (before the start step), then two more.
  _, abstract_state, init_fn, update, _ = train.build(cfg, mesh8, 4)
  rows8, state, it, _ = _steps(cfg, mesh8, 1, state=init_fn(jax.random.key(0)), update=update)
  before = _state(state)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, state, it.get_state())
  ckpt.wait()
  more, state8, it, _ = _steps(cfg, mesh8, 2, state=state, it=it, update=update)
  it.close()
  rows8 += more
  for key in KEYS:
    np.testing.assert_allclose([r[key] for r in rows8], [r[key] for r in rows1], rtol=1e-4,
                               err_msg=key)
  # Before the start the terms are not computed; from it they are, and the teacher's targets
  # are sharp (below log 64 nats).
  assert rows1[0]["loss_silc"] == rows1[0]["loss_tips"] == 0
  assert min(rows1[1]["loss_silc"], rows1[1]["loss_tips"]) > 0
  assert 0 < rows1[1]["silc_teacher_entropy"] < np.log(64)
  np.testing.assert_allclose(rows1[1]["loss"], rows1[1]["loss_contrastive"] + 0.5 * rows1[1][
      "loss_locca"] + rows1[1]["loss_silc"] + 0.25 * rows1[1]["loss_tips"], rtol=1e-6)
  a, b = _state(state1), _state(state8)
  for part in ("params", "teacher", "buffers"):
    for (name, x), (_, y) in zip(pytree.named_leaves(a[part]), pytree.named_leaves(b[part])):
      np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6, err_msg=f"{part}/{name}")
  assert sharding.shardings_of(state8["teacher"]) == jax.tree.map(
      lambda x: x.sharding, abstract_state["teacher"])

  # The teacher: never an optimiser's; untouched before the start, the student at it, then
  # exactly the EMA of the student (no gradient reaches it).
  assert not any("teacher" in name for name, _ in pytree.named_leaves(state8["opt"]))
  init = _state(init_fn(jax.random.key(0)))
  keys = objectives.teacher_keys(objectives.make_terms(cfg))
  assert keys == ["img", "silc", "tips"]
  # Each term declares the top-level names its parameters take (what model_init leaves out).
  terms = objectives.make_terms(cfg)
  assert set(init["params"]) - {"img", "txt", "t", "b"} == {k for t in terms for k in t.params}
  jax.tree.map(np.testing.assert_array_equal, before["teacher"], init["teacher"])
  restored, data_state, step = ckpt.restore(abstract_state)
  assert step == 1
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=cfg.model.image.image_size,
                         max_len=cfg.model.text.max_len)
  it.set_state(data_state)
  _, at_start, it, _ = _steps(cfg, mesh8, 1, state=restored, it=it, update=update)
  s1 = _state(at_start)
  # At the start step the heads are fresh (their values at step 0: weight decay had shrunk
  # them) and the teacher is the student then, moved once: 0.9 * that + 0.1 * the student after.
  start = {"img": before["params"]["img"], "silc": init["params"]["silc"],
           "tips": init["params"]["tips"]}
  assert not np.array_equal(before["params"]["silc"]["bottleneck"]["kernel"],
                            init["params"]["silc"]["bottleneck"]["kernel"])
  want = jax.tree.map(lambda t, s: 0.9 * t.astype(np.float64) + 0.1 * s, start,
                      {k: s1["params"][k] for k in keys})
  jax.tree.map(lambda w, got: np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7),
               want, s1["teacher"])
  # Resume across the start step: the same as straight through.
  resumed, state_r, it, _ = _steps(cfg, mesh8, 1, state=at_start, it=it, update=update)
  it.close()
  ckpt.close()
  assert [r["loss"] for r in resumed] == [rows8[2]["loss"]]
  jax.tree.map(np.testing.assert_array_equal, _state(state_r), _state(state8))


def test_views_are_crops_of_the_image_at_their_size():
  """A constant image's crops are that constant; a left-right ramp's crops are ramps within the
  crop's range, mirrored or not."""
  ramp = np.tile(np.linspace(-1, 1, 32, dtype=np.float32)[None, :, None], (32, 1, 3))[None]
  crops = jax.jit(teacher_lib.crops, static_argnums=(2, 3, 4))
  views = np.asarray(crops(ramp, jax.random.key(0), 16, 8, (0.05, 0.4)))
  assert views.shape == (1, 16, 8, 8, 3)
  np.testing.assert_allclose(views[..., 0], views[..., 1])
  for v in views[0, ..., 0]:
    row = v[4]
    assert np.all(np.diff(row) > 0) or np.all(np.diff(row) < 0)
    assert np.ptp(row) < 2 * np.sqrt(0.4 * 4 / 3) + 0.2  # At most the widest crop's range.
  const = np.full((2, 32, 32, 3), 0.5, np.float32)
  np.testing.assert_allclose(crops(const, jax.random.key(1), 3, 16, (0.4, 1.0)),
                             0.5, atol=1e-6)


@pytest.mark.parametrize("override, message", [
    ("--config.objectives.tips.mask_ratio=1.0", r"objectives.tips.mask_ratio=1.0 must be in "
     r"\(0, 1\)"),
    ("--config.objectives.tips.start=0.5", r"objectives.tips.start=0.5 is later than "
     r"objectives.silc.start=0.25, which uses the EMA teacher tips needs"),
    ("--config.teacher.local_size=48", r"local views \(48 px, up to 0.4 of the area\) are larger "
     r"than the global view \(32 px"),
    ("--config.teacher.global_area=(0.2, 0.3)", r"larger than the global view .*local_area's "
     r"high <= global_area's"),
    ("--config.teacher.local_size=12", r"must be multiples of the patch size 8"),
    ("--config.teacher.momentum=1.0", r"config.teacher.momentum=1.0 must be in \[0, 1\)"),
])
def test_bad_settings_fail_at_start(override, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    objectives.make_terms(_cfg(override))


def test_each_phase_compiles_only_its_started_terms(tmp_path, monkeypatch, capsys):
  """The trainer compiles the step once per phase, when its first step comes; the program
  before the start has no SILC/TIPS work in it (fewer FLOPs, not a branch around them)."""
  def flops(cfg, step):
    _, abstract, _, update, _ = train.build(cfg, sharding.make_mesh(), 4)
    batch = train.abstract_batch(cfg, sharding.make_mesh())
    return update.lower(abstract, batch, step).compile().cost_analysis()["flops"]

  before, after = flops(_cfg(), 0), flops(_cfg(), 1)
  without = flops(_cfg("--config.objectives={'contrastive': {}, 'locca': {'weight': 0.5}}"), 0)
  assert before == pytest.approx(without, rel=1e-2) and after > 1.3 * before
  calls = []
  compile_update = train.compile_update

  def counting(config, mesh, update, abstract_state, seq_len=None, step=0):
    calls.append(update.phase(step))
    return compile_update(config, mesh, update, abstract_state, seq_len, step)

  monkeypatch.setattr(train, "compile_update", counting)
  results = train.main(["--config", CONFIG, "--workdir", str(tmp_path / "run")] + TINY + ALL
                       + ["--config.total_steps=4", "--config.log_training_steps=1"])
  assert calls == [0, 1] and results == {}
  assert "step 1: compiling the update step with ['silc', 'tips'] started" in capsys.readouterr().out
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  losses = [r["train/loss_silc"] for r in rows if "train/loss_silc" in r]
  assert losses[0] == 0 and all(x > 0 for x in losses[1:]), losses
