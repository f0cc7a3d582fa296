"""Released models: configs/pretrained build the released architectures; every reference fixture
loads through config.model_init to the reference's embeddings; init -> train -> export -> reload
-> evaluate end to end."""

import glob
import os

import jax
import numpy as np
import pytest

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import config as config_lib
from big_vision_lite import evaluate, job, metrics, pretrained, pytree, train, weights
from big_vision_lite.tools import export as export_tool
from tests.test_train import CONFIG, ROOT, TINY
from tests.test_weights import DATA, _big_vision_config, _fixture, _open_clip_config

# Parameter counts of the released models in millions: open_clip's results table (SigLIP,
# CLIP); SigLIP 2: KerasHub's SigLIP 2 presets (whose exact counts add the position-id buffers,
# patches + 64, to the parameters; B/16 384 there repeats B/32 256's count, so its figure is
# transformers' SiglipModel with the released config, which equals ours for every model).
PUBLISHED_PARAMS_M = {"siglip_b16_224": 203.16, "siglip_b16_256": 203.20,
                      "siglip_so400m14_384": 877.96, "clip_b32": 151.28, "clip_b16": 149.62,
                      "clip_l14": 427.62, "clip_rn50": 102.01,
                      "siglip2_b16_224": 375.19, "siglip2_b16_256": 375.23,
                      "siglip2_b16_384": 375.48, "siglip2_b16_512": 375.82,
                      "siglip2_b32_256": 376.86, "siglip2_l16_256": 881.53,
                      "siglip2_l16_384": 881.85, "siglip2_l16_512": 882.31,
                      "siglip2_so400m14_224": 1135.46, "siglip2_so400m14_384": 1136.01,
                      "siglip2_so400m16_256": 1135.67, "siglip2_so400m16_384": 1136.04,
                      "siglip2_so400m16_512": 1136.56, "siglip2_gopt16_256": 1871.39,
                      "siglip2_gopt16_384": 1871.89,
                      # NaFlex: transformers' Siglip2Model with the released config.
                      "siglip2_b16_naflex": 375.23, "siglip2_so400m16_naflex": 1135.67}


def _abstract_params(cfg):
  model = job.build_model(cfg)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *model.example_inputs()))["params"]


@pytest.mark.parametrize("name", sorted(pretrained.RELEASED))
def test_pretrained_configs_build_the_released_architectures(name):
  path = os.path.join(ROOT, "configs", "pretrained", f"{name}.py")
  cfg = config_lib.from_args(path)  # Loads without arguments.
  config_lib.validate(cfg, 1)
  for tower in ("image", "text"):  # The same count; one traced block instead of up to 40.
    if cfg.model[tower].get("type") != "resnet":
      cfg.model[tower].scan = True
  count = sum(x.size for x in jax.tree.leaves(_abstract_params(cfg)))
  assert round(count / 1e6, 2) == PUBLISHED_PARAMS_M[name]
  given = config_lib.from_args(path + ":init=/w/model.bin,tokenizer=/t/spm.model")
  assert given.model_init == "/w/model.bin"
  if name.startswith("siglip_"):
    assert given.input.tokenizer == "/t/spm.model:pad=1"  # SigLIP pads with 1.
  if name.startswith("siglip2_"):
    assert given.input.tokenizer == "/t/spm.model"  # SigLIP 2: Gemma's, padded with 0.
  if name.endswith("_naflex"):
    assert "naflex(16, 256)" in cfg.input.pp
    assert "naflex(16, 576)" in config_lib.from_args(path + ":seq_len=576").evals.imagenet.pp
    with pytest.raises(config_lib.ConfigError, match="seq_len='many' should be a positive"):
      config_lib.from_args(path + ":seq_len=many")
  assert sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(
      ROOT, "configs", "pretrained", "*.py"))) == sorted(pretrained.RELEASED)


FIXTURES = [  # (checkpoint, its reference outputs, our model config)
    ("bv_siglip.npz", "bv_siglip_io.npz", lambda io: _big_vision_config(io["config"])),
    ("bv_siglip_bare.npz", "bv_siglip_io.npz", lambda io: _big_vision_config(io["config"])),
    ("bv_siglip_scan.npz", "bv_siglip_scan_io.npz", lambda io: _big_vision_config(io["config"])),
    ("bv_siglip.npz", "bv_siglip_resample_io.npz",
     lambda io: _big_vision_config(io["config"], image_size=48)),
    ("oc_vit.safetensors", "oc_vit_io.npz", lambda io: _open_clip_config(io["config"], False)),
    ("oc_vit_bias.safetensors", "oc_vit_bias_io.npz",
     lambda io: _open_clip_config(io["config"], True)),
    ("oc_resnet.safetensors", "oc_resnet_io.npz",
     lambda io: _open_clip_config(io["config"], False)),
]


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
  """A sentencepiece model of 100 pieces: the big_vision fixtures embed 128 tokens, fewer than
  the shapes tokenizer's 256 (loading them with that one is, rightly, a vocabulary error)."""
  from big_vision_lite.data import shapes, tokenizer  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("tok") / "small.model")
  tokenizer.train(shapes.caption_corpus(num_examples=300), path, vocab_size=100)
  return path


@pytest.mark.parametrize("ckpt,io_name,model", FIXTURES, ids=[f[0] + ":" + f[1] for f in FIXTURES])
def test_each_fixture_loads_through_model_init_to_the_reference_embeddings(
    ckpt, io_name, model, small_tokenizer):
  io = _fixture(io_name)
  cfg = config_lib.from_args(CONFIG, overrides={"model": model(io), "input.tokenizer": small_tokenizer,
                                                "model_init": os.path.join(DATA, ckpt)})
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _abstract_params(cfg))
  params = job.load_model_init(cfg, fresh)
  zimg, ztxt, _ = jax.jit(job.build_model(cfg).apply)({"params": params}, io["images"],
                                                      io["texts"])
  np.testing.assert_allclose(zimg, io["img_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(ztxt, io["txt_emb"], atol=1e-5, rtol=0)


def test_init_train_export_reload_evaluate(tmp_path):
  """open_clip weights -> 20 steps on shapes -> safetensors -> bit-identical reload ->
  standalone evaluation of the exported file equals the in-training figures."""
  io = _fixture("oc_vit_io.npz")
  model = _open_clip_config(io["config"], False)
  run = tmp_path / "run"
  overrides = [f"--config.model={model!r}", "--config.loss=softmax",
               f"--config.model_init={os.path.join(DATA, 'oc_vit.safetensors')}",
               "--config.total_steps=20", "--config.ckpt_steps=20", "--config.lr=1e-4",
               "--config.log_training_steps=10",
               "--config.evals={'z': {'type': 'zeroshot', 'dataset': 'shapes_shape', "
               "'num_examples': 24}}"]
  results = train.main(["--config", CONFIG, "--workdir", str(run)] + TINY + overrides)
  first = metrics.read(str(run))[0]
  assert np.isfinite(first["train/loss"])
  out = tmp_path / "model.safetensors"
  export_tool.main(["--workdir", str(run), "--format", "safetensors", "--output", str(out)])
  cfg = config_lib.from_json(str(run / "config.json"))
  trained = ckpt_lib.restore_params(str(run / "checkpoints"))
  reloaded = weights.load_params(str(out), cfg.model.to_dict())
  for (name, a), (_, b) in zip(pytree.named_leaves(trained), pytree.named_leaves(reloaded)):
    np.testing.assert_array_equal(a, b, err_msg=name)
  # Training started from the open_clip weights: 20 small steps moved every matrix a little.
  start = weights.load_params(os.path.join(DATA, "oc_vit.safetensors"), cfg.model.to_dict())
  for (name, a), (_, b) in zip(pytree.named_leaves(trained), pytree.named_leaves(start)):
    if name.endswith("/kernel"):
      assert 0 < np.abs(a - b).max() < 0.05, name
  # The exported file evaluated on its own (no checkpoint, no workdir) gives the same figures.
  standalone = evaluate.main(["--config", str(run / "config.json"),
                              f"--config.model_init={out}"])
  assert standalone == results


def test_docs_list_the_released_models():
  from big_vision_lite.tools import readme_tables  # pylint: disable=import-outside-toplevel
  doc = open(os.path.join(ROOT, "docs", "weights.md")).read()
  assert readme_tables.block(doc, "pretrained-table") == pretrained.markdown_table(), (
      "docs/weights.md table of released models is stale: run "
      "`python -m big_vision_lite.tools.readme_tables`")
