"""Hugging Face transformers directories and open_clip's SigLIP state dicts, in and out.

The reference outputs in tests/data/ were made by transformers and open_clip themselves
(tests/data/make_fixtures.py hf); the `hf_export_*` directories are our exports, which
transformers loaded with our embeddings when they were made.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from big_vision_lite import pytree, weights
from big_vision_lite.models.two_towers import TwoTowers
from big_vision_lite.weights import hf

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _io(name):
  with np.load(os.path.join(DATA, f"{name}_io.npz")) as z:
    io = dict(z)
  io["config"] = json.loads(str(io["config"]))
  return io


def _embed(config, params, io):
  image = ({k: io[k] for k in ("patches", "yidx", "xidx", "mask")} if "patches" in io
           else io["images"])
  return jax.jit(TwoTowers(**config).apply)({"params": params}, image, io["texts"])


@pytest.mark.parametrize("name", ["hf_siglip", "hf_clip", "hf_siglip2"])
def test_transformers_directory_gives_transformers_outputs(name):
  """hf_siglip2 is NaFlex: four aspect ratios, three padded, grids down- and up-sampled from
  the 4 x 4 position grid."""
  path, io = os.path.join(DATA, name), _io(name)
  config = weights.hf_config(path)
  zimg, ztxt, out = _embed(config, weights.load_params(path, config), io)
  np.testing.assert_allclose(zimg, io["img_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(ztxt, io["txt_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(out["t"], np.exp(io["logit_scale"]).reshape(()), rtol=1e-6)
  if "logit_bias" in io:
    np.testing.assert_allclose(out["b"], io["logit_bias"].reshape(()), rtol=1e-6)


def test_hf_config_reads_sizes_activation_and_epsilon():
  config = weights.hf_config(os.path.join(DATA, "hf_clip"))
  assert config["image"] == dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=(8, 8),
                                 act="quick_gelu", ln_eps=1e-5, image_size=32, pool_type="tok",
                                 posemb_cls=True, ln_pre=True, patch_bias=False, head_bias=False)
  assert config["out_dim"] == 24 and config["bias_init"] is None
  config = weights.hf_config(os.path.join(DATA, "hf_siglip"))
  assert config["text"]["act"] == "gelu_tanh" and config["text"]["ln_eps"] == 1e-6
  assert config["out_dim"] == (None, 32) and config["text"]["vocab_size"] == 128


def test_naflex_checkpoint_for_a_square_model_and_the_reverse_say_which_option():
  naflex = weights.hf_config(os.path.join(DATA, "hf_siglip2"))
  assert naflex["image"]["naflex"] and naflex["image"]["posemb_grid"] == 4
  square = weights.hf_config(os.path.join(DATA, "hf_siglip"))
  with pytest.raises(weights.WeightsError, match=r"NaFlex image tower.*naflex=True"):
    weights.load_params(os.path.join(DATA, "hf_siglip2"), square)
  with pytest.raises(weights.WeightsError, match=r"square-image ViT.*naflex=False"):
    weights.load_params(os.path.join(DATA, "hf_siglip"), naflex)


def test_open_clip_siglip_timm_trunk_gives_open_clip_outputs():
  io = _io("oc_siglip")
  # open_clip's SigLIP: timm's ViT uses exact GELU, the text tower the tanh form (act_kwargs).
  config = dict(image=dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=(8, 8),
                           image_size=32, pool_type="map", act="gelu"),
                text=dict(width=32, depth=2, mlp_dim=128, num_heads=2, vocab_size=128, max_len=8,
                          pool_type="last"),
                out_dim=(None, 32), temperature_init=10., bias_init=-10.)
  params = weights.load_params(os.path.join(DATA, "oc_siglip.safetensors"), config)
  zimg, ztxt, out = _embed(config, params, io)
  np.testing.assert_allclose(zimg, io["img_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(ztxt, io["txt_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(out["b"], io["logit_bias"], rtol=1e-6)


def _shard(src, dst):
  """`src`'s model.safetensors split into two shards listed in model.safetensors.index.json."""
  from safetensors.numpy import load_file, save_file
  state = load_file(os.path.join(src, hf.SAFETENSORS))
  keys = sorted(state)
  shards = {"model-00001-of-00002.safetensors": keys[::2],
            "model-00002-of-00002.safetensors": keys[1::2]}
  os.makedirs(dst)
  for file, names in shards.items():
    save_file({k: state[k] for k in names}, os.path.join(dst, file))
  with open(os.path.join(dst, hf.INDEX), "w", encoding="utf-8") as f:
    json.dump({"weight_map": {k: file for file, names in shards.items() for k in names}}, f)
  shutil.copy(os.path.join(src, hf.CONFIG), dst)


def test_sharded_checkpoint_and_a_missing_shard(tmp_path):
  src = os.path.join(DATA, "hf_siglip")
  _shard(src, tmp_path / "sharded")
  config = weights.hf_config(src)
  assert weights.hf_config(str(tmp_path / "sharded" / hf.INDEX)) == config
  whole = weights.load_params(src, config)
  sharded = weights.load_params(str(tmp_path / "sharded" / hf.INDEX), config)
  for (name, a), (_, b) in zip(pytree.named_leaves(whole), pytree.named_leaves(sharded)):
    np.testing.assert_array_equal(a, b, err_msg=name)
  os.remove(tmp_path / "sharded" / "model-00002-of-00002.safetensors")
  with pytest.raises(hf.HFError, match=r"model-00002-of-00002.safetensors.*whole repository"):
    weights.load_params(str(tmp_path / "sharded"), config)


def test_repo_id_resolves_through_the_hub_cache(tmp_path, monkeypatch):
  # huggingface_hub's cache layout: models--ORG--NAME/{refs/main, snapshots/REVISION/...}.
  repo = tmp_path / "cache" / "models--acme--tiny-siglip"
  revision = "0123456789abcdef0123456789abcdef01234567"
  shutil.copytree(os.path.join(DATA, "hf_siglip"), repo / "snapshots" / revision)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(revision)
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  config = weights.hf_config("hf:acme/tiny-siglip")
  assert config == weights.hf_config(os.path.join(DATA, "hf_siglip"))
  from safetensors.numpy import load_file
  loaded = dict(pytree.named_leaves(weights.load_params("hf:acme/tiny-siglip", config)))
  ref = load_file(os.path.join(DATA, "hf_siglip", hf.SAFETENSORS))  # (the parity test's file)
  np.testing.assert_array_equal(loaded["txt/Embed_0/embedding"],
                                ref["text_model.embeddings.token_embedding.weight"])
  with pytest.raises(hf.HFError, match=r"hf:acme/absent: not in the Hugging Face cache"):
    weights.hf_config("hf:acme/absent")


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BlipModel"],
                                                    "model_type": "blip"}))
  with pytest.raises(hf.HFError, match=r"'BlipModel'.*supported: SiglipModel, Siglip2Model, "
                                       r"CLIPModel"):
    weights.hf_config(str(tmp_path))
  with pytest.raises(hf.HFError, match="BlipModel"):
    weights.load_params(str(tmp_path), dict(image={}, text={}))


def test_directory_weights_into_another_architecture_say_how_to_build_it():
  config = weights.hf_config(os.path.join(DATA, "hf_siglip"))
  config["image"]["pool_type"] = "gap"
  with pytest.raises(weights.WeightsError, match=r"unexpected.*MAPHead_0[\s\S]*hf_config"):
    weights.load_params(os.path.join(DATA, "hf_siglip"), config)


@pytest.mark.parametrize("name", ["hf_export_siglip", "hf_export_clip", "hf_export_siglip2"])
def test_our_export_is_what_transformers_loaded_with_our_embeddings(tmp_path, name):
  """The committed export gave transformers' embeddings (hf_*) equal to ours when it was made
  (and, for the NaFlex one, AutoTokenizer our token ids); today's exporter must write the same
  directory, and our model and tokenizer still give those outputs."""
  path, io = os.path.join(DATA, name), _io(name)
  config = io["config"]
  params = weights.load_params(path, config)
  zimg, ztxt, _ = _embed(config, params, io)
  np.testing.assert_allclose(zimg, io["hf_img_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(ztxt, io["hf_txt_emb"], atol=1e-5, rtol=0)
  assert weights.hf_config(path)["image"]["width"] == 32
  assert weights.hf_config(path)["image"].get("naflex", False) == ("siglip2" in name)
  tokenizer = None
  if "tok_ids" in io:  # transformers' AutoTokenizer gave these ids from the directory.
    from big_vision_lite.data import tokenizer as tok_lib
    tokenizer = os.path.join(path, "tokenizer.model")
    np.testing.assert_array_equal(
        tok_lib.get(tokenizer).encode([str(t) for t in io["tok_texts"]], 8), io["tok_ids"])
  weights.export(params, config, str(tmp_path / "again"), "hf", tokenizer=tokenizer)
  assert sorted(os.listdir(path)) == sorted(os.listdir(tmp_path / "again"))
  for file in ("config.json", "tokenizer_config.json"):
    if os.path.exists(os.path.join(path, file)):
      with open(os.path.join(path, file)) as f, open(tmp_path / "again" / file) as g:
        assert json.load(f) == json.load(g)
  from safetensors.numpy import load_file
  ref, again = (load_file(os.path.join(p, hf.SAFETENSORS)) for p in (path, tmp_path / "again"))
  assert sorted(ref) == sorted(again)
  for k in ref:
    np.testing.assert_array_equal(ref[k], again[k], err_msg=k)


def test_export_refuses_what_the_class_cannot_hold(tmp_path):
  config = _io("hf_export_siglip")["config"]
  params = weights.load_params(os.path.join(DATA, "hf_export_siglip"), config)
  bad = dict(config, out_dim=(16, 32))  # an image projection head under SiglipModel
  with pytest.raises(hf.HFError, match=r"SiglipModel[\s\S]*image projection head"):
    weights.export(params, bad, str(tmp_path / "out"), "hf")
  bad = dict(config, text=dict(config["text"], act="relu"))
  with pytest.raises(hf.HFError, match=r"model.text.act='relu'"):
    weights.export(params, bad, str(tmp_path / "out"), "hf")
  assert not os.path.exists(tmp_path / "out" / "config.json")


def test_directory_tokenizer_is_found_by_architecture(tmp_path):
  shutil.copytree(os.path.join(DATA, "hf_siglip"), tmp_path / "siglip")
  assert hf.tokenizer_spec(str(tmp_path / "siglip")) is None
  (tmp_path / "siglip" / "spiece.model").write_bytes(b"")
  assert hf.tokenizer_spec(str(tmp_path / "siglip")) == str(tmp_path / "siglip" / "spiece.model") + ":pad=1"
  (tmp_path / "siglip" / "tokenizer.model").write_bytes(b"")  # SigLIP 2: Gemma's, padded with 0
  assert hf.tokenizer_spec(str(tmp_path / "siglip")) == str(tmp_path / "siglip" / "tokenizer.model")


def test_a_directory_model_init_brings_its_tokenizer_when_none_is_configured(tmp_path):
  import ml_collections
  from big_vision_lite import job
  from big_vision_lite.data import tokenizer as tok_lib
  from tests.test_tokenizer import _gemma_like
  shutil.copytree(os.path.join(DATA, "hf_siglip2"), tmp_path / "siglip2")
  model = _gemma_like(tmp_path / "siglip2" / "tokenizer.model")
  config = ml_collections.ConfigDict({"input": {"tokenizer": None},
                                      "model_init": str(tmp_path / "siglip2")})
  assert job.tokenizer_spec(config) == model
  ids = tok_lib.get(job.tokenizer_spec(config)).encode(["A Dog"], 8)[0]
  assert ids[-1] == 0 and 1 in ids and 2 not in ids  # Gemma's conventions: pad 0, EOS, no BOS
  config.input.tokenizer = "clip"
  assert job.tokenizer_spec(config) == "clip"
  config.input.tokenizer, config.model_init = None, os.path.join(DATA, "hf_siglip2")
  assert job.tokenizer_spec(config) == tok_lib.SHAPES_MODEL  # a directory without one
  (tmp_path / "run").mkdir()  # A training run's workdir has a config.json too: not a model's.
  (tmp_path / "run" / "config.json").write_text(json.dumps({"model": {"image": {}}}))
  config.model_init = str(tmp_path / "run")
  assert not hf.is_model_dir(config.model_init)
  assert job.tokenizer_spec(config) == tok_lib.SHAPES_MODEL
