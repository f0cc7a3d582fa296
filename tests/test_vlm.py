"""The `vlm` objective (LLaVA's recipe): greedy decoding against a naive loop, instruction data
against the drawn objects, the loss against a float64 reference, which parameters each stage
trains (one real update step each), the vqa evaluator's scoring, and bad input."""

import json
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_lite import config as config_lib
from big_vision_lite import job, objectives, pytree, schema, sharding, train
from big_vision_lite.data import instruct, loader, shapes, sources
from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.models import generate
from big_vision_lite.objectives.vlm import VLM
from tests.test_sources import add_member, jpeg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "vlm_shapes.py")
TINY = [
    "--config.batch_size=8", "--config.model.image.variant=mu/8", "--config.model.image.width=32",
    "--config.model.image.mlp_dim=64", "--config.model.image.depth=1",
    "--config.model.image.num_heads=2", "--config.model.text.width=32",
    "--config.model.text.mlp_dim=64", "--config.model.text.depth=1",
    "--config.model.text.num_heads=2", "--config.model.out_dim=16",
    "--config.model.image.image_size=32", "--config.objectives.vlm.depth=1",
    "--config.objectives.vlm.width=24", "--config.evals.vqa.num_examples=4",
    "--config.evals.vqa.heldout_examples=2", "--config.eval_batch_size=8",
]


def _cfg(stage: str, *overrides):
  return config_lib.from_args(f"{CONFIG}:{stage}", TINY + list(overrides))


def test_greedy_matches_a_naive_loop_per_example():
  rng = np.random.default_rng(0)
  v, t, steps, eos = 7, 10, 4, 1
  table, by_pos = rng.normal(size=(v, v)), rng.normal(size=(t, v))
  # A causal "model": position j's logits depend on token j and j alone.
  logits = lambda tokens: jnp.asarray(table)[tokens] + jnp.asarray(by_pos)[None]
  next_logits = lambda tokens, at: generate.at(logits(tokens), at)
  tokens = rng.integers(2, v, (5, t)).astype(np.int32)
  lengths = np.array([1, 2, 3, 5, 6], np.int32)
  got = np.asarray(generate.greedy(next_logits, jnp.asarray(tokens), jnp.asarray(lengths), steps,
                                   eos))
  for b in range(5):
    seq, want = list(tokens[b, :lengths[b]]), []
    while len(want) < steps and (not want or want[-1] != eos):
      nxt = int(np.argmax(table[seq[-1]] + by_pos[len(seq) - 1]))
      seq.append(nxt)
      want.append(nxt)
    np.testing.assert_array_equal(got[b], want + [0] * (steps - len(want)))


def test_questions_answer_from_the_drawn_objects_in_several_phrasings():
  phrasings, types = set(), set()
  for i in range(150):
    ex = shapes.draw(0, "train", i, 32, all_captions=False)
    objs = ex["objects"]
    assert all((o["shape"], o["color"]) not in shapes.HELDOUT_COMBOS for o in objs)
    for qtype, q, a in instruct.questions(ex, np.random.default_rng(i)):
      types.add(qtype)
      phrasings.add((qtype, q.split(" ")[1]))
      if qtype == "count":
        assert a == ["one", "two"][len(objs) - 1]
      elif qtype == "shape":  # "... at the <position>": the object in that cell.
        obj = [o for o in objs if q.endswith("the " + shapes.POSITIONS[o["position"]])]
        assert a == shapes.SHAPES[obj[0]["shape"]]
      elif qtype in ("color", "size", "position"):  # The object named alone by its reference.
        field, names = {"color": ("color", shapes.COLOR_NAMES), "size": ("size", shapes.SIZE_NAMES),
                        "position": ("position", shapes.POSITIONS)}[qtype]
        named = [o for o in objs if f" {shapes.SHAPES[o['shape']]}" in q
                 and (len(objs) == 1 or objs[0]["shape"] != objs[1]["shape"]
                      or shapes.COLOR_NAMES[o["color"]] in q)]
        assert a == names[named[0][field]], (q, a, objs)
      else:
        assert a in ("yes", "no") and len(objs) == 2
  assert types == set(instruct.QUESTION_TYPES)
  assert all(sum(t == qt for t, _ in phrasings) >= 2 for qt in instruct.QUESTION_TYPES)


def test_conversation_encoding_masks_the_answers_and_rejects_bad_turns():
  tok = tok_lib.get()
  text, mask = instruct.encode(tok, [("where is the star", "top left"), ("count the shapes",
                                                                          "one")], 24)
  q1, a1 = instruct.prompt(tok, "where is the star"), instruct.prompt(tok, "top left")
  q2, a2 = instruct.prompt(tok, "count the shapes"), instruct.prompt(tok, "one")
  want = q1 + a1 + q2 + a2
  np.testing.assert_array_equal(text[:len(want)], want)
  assert not text[len(want):].any()
  np.testing.assert_array_equal(mask[:len(want)], [0] * len(q1) + [1] * len(a1) + [0] * len(q2)
                                + [1] * len(a2))
  assert tok.decode(text[None, len(q1):len(q1) + len(a1)])[0] == "top left"
  with pytest.raises(instruct.ConversationError, match="empty answer"):
    instruct.encode(tok, [("where is the star", "  ")], 24)
  with pytest.raises(instruct.ConversationError, match="longer than the language model's text "
                     "context of 8"):
    instruct.encode(tok, [("where is the star", "top left")], 8)
  assert instruct.normalize("The Top-Left.") == "top left" and instruct.normalize("2") == "two"


def test_loss_is_the_answer_tokens_cross_entropy_of_a_float64_reference():
  cfg = _cfg("2")
  term = objectives.make_terms(cfg)[0]
  rng = jax.random.key(1)
  img = jax.random.normal(rng, (3, 16, 32))
  params = jax.jit(term.init)(rng, {"img": {"encoded": img[:1]}})
  params["lm"]["head"]["kernel"] = jax.random.normal(rng, params["lm"]["head"]["kernel"].shape)
  text = np.array(jax.random.randint(rng, (3, term.text_len), 1, 200), np.int32)
  mask = np.array(jax.random.bernoulli(rng, 0.3, (3, term.text_len)), np.float32)
  loss, _ = jax.jit(term.loss)(params, {"vlm_text": text, "vlm_mask": mask},
                               {"img": {"encoded": img}})
  lm = term.lm(16)
  inputs = np.concatenate([np.full((3, 1), term.vocab), text[:, :-1]], 1)
  z = np.asarray(jax.jit(lambda p: lm.apply({"params": p["lm"]}, inputs, term.projection.apply(
      {"params": p["proj"]}, img), logits=True))(params), np.float64)[:, 16:]
  logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(
      -1, keepdims=True)
  nll = -np.take_along_axis(logp, text[..., None], -1)[..., 0]
  want = np.mean((nll * mask).sum(1) / np.maximum(mask.sum(1), 1))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


@pytest.mark.parametrize("stage,trains", [("1", {"proj"}), ("2", {"proj", "lm"})])
def test_a_stage_trains_only_its_parameters_and_keeps_the_image_tower(stage, trains):
  cfg = _cfg(stage)
  mesh = sharding.make_mesh(cfg.mesh)
  _, _, init_fn, update, mask = train.build(cfg, mesh, 10)
  state = init_fn(jax.random.key(0))
  # A trained LM has a non-zero head (it starts at zero): then every trainable leaf gets a
  # gradient on the first step.
  head = state["params"]["lm"]["head"]
  state["params"]["lm"]["head"] = {**head, "kernel": jax.random.normal(
      jax.random.key(1), head["kernel"].shape) + 0 * head["kernel"]}
  before = jax.device_get(state["params"])
  it = loader.make_input(cfg.input, cfg.batch_size, image_size=cfg.model.image.image_size,
                         max_len=cfg.model.text.max_len)
  local = next(it)
  it.close()
  keys = train.step_batch(cfg, it.element_spec)
  state, m = update(state, loader.to_global({k: local[k] for k in keys},
                                            sharding.batch_sharding(mesh)))
  assert np.isfinite(float(m["loss"]))
  after = dict(pytree.named_leaves(jax.device_get(state["params"])))
  trainable = dict(pytree.named_leaves(mask))
  for name, old in pytree.named_leaves(before):
    top = name.split("/")[0]
    assert trainable[name] == (top in trains), name
    if top in trains:
      assert not np.array_equal(after[name], old), f"{name} did not train"
    else:  # Frozen: bit-identical (the image tower included).
      np.testing.assert_array_equal(after[name], old, err_msg=name)


def test_vqa_scores_exact_answers_per_question_type():
  cfg = _cfg("2")
  mesh = sharding.make_mesh(cfg.mesh)
  model = job.build_model(cfg)
  (evaluator, _), = job.build_evaluators(cfg, model, mesh).values()
  tok = tok_lib.get()
  right = np.stack([np.pad(instruct.prompt(tok, a), (0, evaluator.steps - len(
      instruct.prompt(tok, a)))) for a in evaluator.answers])
  scores = evaluator.metrics({"answers": right})
  assert set(scores) >= {f"vqa/shapes/{t}" for t in instruct.QUESTION_TYPES} | {
      "vqa/shapes/all", "vqa/shapes/heldout", "vqa/shapes/heldout_color"}
  assert all(v == 1.0 for v in scores.values())
  wrong = np.where(evaluator.types == "color", 0, 1)[:, None] * right
  scores = evaluator.metrics({"answers": wrong})
  assert scores["vqa/shapes/color"] == 0.0 and scores["vqa/shapes/shape"] == 1.0
  params = train.build(cfg, mesh, 10)[2](jax.random.key(0))["params"]
  answers = evaluator.embed(params)["answers"]  # An untrained LM: shapes and range only.
  assert answers.shape == (len(evaluator.answers), evaluator.steps)


def test_bad_inputs_are_config_errors_naming_the_fix(tmp_path):
  mesh = sharding.make_mesh((("data", -1),))
  # 16 image tokens + BOS + 56 text tokens do not fit a context of 40.
  cfg = _cfg("2", "--config.objectives.vlm.context=40")
  with pytest.raises(config_lib.ConfigError, match=r"image tower gives 16 tokens; .* needs 73 "
                     r"positions, but its context is 40"):
    train.build(cfg, mesh, 10)
  # A checkpoint whose projection reads tokens of another width.
  cfg = _cfg("2")
  term = VLM(cfg, cfg.objectives.vlm)
  fresh = term.init(jax.random.key(0), {"img": {"encoded": jnp.zeros((1, 16, 32))}})
  other = term.init(jax.random.key(0), {"img": {"encoded": jnp.zeros((1, 16, 48))}})
  path = str(tmp_path / "stage1.npz")
  np.savez(path, **{f"{k}/{n}": np.asarray(x) for k in other
                    for n, x in pytree.named_leaves(other[k])})
  cfg.model_init = path
  with pytest.raises(config_lib.ConfigError, match=r"proj/Dense_0/kernel: checkpoint \(48, 24\) "
                     r"vs model \(32, 24\)"):
    term.init_from(cfg, {}, jax.device_get(fresh))
  # The vqa evaluator needs the term.
  cfg = config_lib.from_args(os.path.join(ROOT, "configs", "siglip_shapes.py"),
                             ["--config.evals={'vqa': {'type': 'vqa'}}"])
  with pytest.raises(config_lib.ConfigError, match="add 'vlm' to config.objectives"):
    job.build_evaluators(cfg, job.build_model(cfg), mesh)


def test_tar_samples_with_llava_conversations_become_vlm_batches(tmp_path):
  turns = [{"from": "human", "value": "<image>\nwhere is the star"}, {"from": "gpt",
                                                                     "value": "top left"},
           {"from": "human", "value": "count the shapes"}, {"from": "gpt", "value": "one"}]
  bad = [{"from": "human", "value": "where is the star"}, {"from": "gpt", "value": ""}]
  with tarfile.open(tmp_path / "conv.tar", "w") as tar:
    for i, conv in enumerate([turns, bad, turns]):
      add_member(tar, f"{i:03d}.jpg", jpeg(i))
      add_member(tar, f"{i:03d}.json", json.dumps({"conversations": conv}).encode())
  it = loader.GrainInput(data={"name": "tar", "pattern": str(tmp_path / "conv.tar")},
                         pp="decode|resize(32)|value_range|conversation(24)|"
                            "keep('image', 'vlm_text', 'vlm_mask')",
                         global_batch=2, process_index=0, process_count=1)
  batches = [next(it), next(it)]  # 4 good rows: every record of the first epoch was read.
  it.close()
  want = instruct.encode(tok_lib.get(), [("where is the star", "top left"),
                                         ("count the shapes", "one")], 24)
  for batch in batches:
    for row in range(2):
      np.testing.assert_array_equal(batch["vlm_text"][row], want[0])
      np.testing.assert_array_equal(batch["vlm_mask"][row], want[1])
  assert it.skipped >= 1  # The empty answer.
  with pytest.raises(sources.BadRecord, match="alternating, human first"):
    sources.standardize({"jpg": jpeg(0), "json": json.dumps({"conversations": turns[:3]})})


def test_report_tabulates_final_vqa_per_encoder_with_seed_spread(tmp_path):
  from big_vision_lite.tools import vlm_report  # pylint: disable=import-outside-toplevel
  for seed, acc in ((0, 0.5), (1, 0.7)):
    run = tmp_path / "siglip" / f"seed{seed}" / "stage2"
    run.mkdir(parents=True)
    rows = [{"step": 1, "train/loss": 1.0}, {"step": 2, "vqa/shapes/color": 0.0},
            {"step": 3, **{f"vqa/shapes/{c}": acc for c in instruct.QUESTION_TYPES},
             "vqa/shapes/all": acc, "vqa/shapes/heldout": 1 - acc}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "clip").mkdir()  # No finished run: no row.
  out = vlm_report.table([str(tmp_path / "siglip"), str(tmp_path / "clip")], 2).splitlines()
  assert len(out) == 3 and out[2].startswith("| siglip | 2 | 0.600 ± 0.141 |")
  assert out[2].endswith("| 0.600 ± 0.141 | 0.400 ± 0.141 |")
  png = vlm_report.plot([str(tmp_path / "siglip"), str(tmp_path / "clip")], str(tmp_path / "p.png"))
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_stage_loads_the_previous_stages_projection_and_lm(tmp_path):
  cfg = _cfg("2")
  mesh = sharding.make_mesh(cfg.mesh)
  abstract = train.build(cfg, mesh, 10)[1]["params"]
  rng = np.random.default_rng(0)
  saved = {n: rng.normal(size=x.shape).astype(np.float32)
           for n, x in pytree.named_leaves(abstract)}
  np.savez(tmp_path / "stage1.npz", **saved)
  cfg.model_init = str(tmp_path / "stage1.npz")
  fresh = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
  loaded = dict(pytree.named_leaves(job.load_model_init(cfg, fresh)))
  assert set(loaded) == set(saved)
  for name, value in saved.items():  # The towers, the projection and the LM alike.
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_a_siglip2_run_is_an_encoder_its_terms_parameters_left_out(tmp_path, capsys):
  # A SigLIP 2 recipe checkpoint also holds its decoder and SILC/TIPS heads: the VLM takes the
  # towers from it and leaves those out, saying so.
  cfg = _cfg("0")
  mesh = sharding.make_mesh(cfg.mesh)
  abstract = train.build(cfg, mesh, 10)[1]["params"]
  rng = np.random.default_rng(0)
  towers = {n: rng.normal(size=x.shape).astype(np.float32)
            for n, x in pytree.named_leaves(abstract) if n.split("/")[0] not in ("proj", "lm")}
  others = {"dec/Embed_0/embedding": np.ones((4, 3), np.float32),
            "silc/Dense_0/kernel": np.ones((2, 2), np.float32),
            "tips/mask_token": np.ones((3,), np.float32)}
  np.savez(tmp_path / "siglip2.npz", **towers, **others)
  cfg.model_init = str(tmp_path / "siglip2.npz")
  fresh = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
  loaded = dict(pytree.named_leaves(job.load_model_init(cfg, fresh)))
  assert set(loaded) == {n for n, _ in pytree.named_leaves(abstract)}
  for name, value in towers.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  assert not any(np.any(loaded[n]) for n in loaded if n.split("/")[0] in ("proj", "lm"))
  assert "left out the parameters of terms this config does not train: ['dec', " \
         "'silc', 'tips']" in capsys.readouterr().out
