"""weights.py: formats, layout conversions, export round trips, errors, and the export tool."""

import builtins
import json
import os
import pickle
import re
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest

from big_vision_lite import checkpoint as ckpt_lib
from big_vision_lite import pytree, weights
from big_vision_lite.models.two_towers import TwoTowers
from big_vision_lite.weights import open_clip

CLIP_VIT = dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=(8, 8), image_size=32,
                pool_type="tok", posemb_cls=True, ln_pre=True, patch_bias=False, head_bias=False,
                act="quick_gelu", ln_eps=1e-5)
CLIP_TEXT = dict(width=32, depth=2, mlp_dim=64, num_heads=2, vocab_size=64, max_len=8,
                 causal=True, pool_type="argmax", head_bias=False, act="quick_gelu", ln_eps=1e-5)
RESNET = dict(type="resnet", layers=(1, 2, 1, 1), width=8, num_heads=2, image_size=64)
SIGLIP = dict(image=dict(variant="mu/8", width=32, depth=2, mlp_dim=64, num_heads=2,
                         image_size=32, pool_type="map"),
              text=dict(variant="mu", width=32, depth=2, mlp_dim=64, num_heads=2, vocab_size=64,
                        max_len=8),
              out_dim=16, temperature_init=10., bias_init=-5.)


def _clip(image, **kw):
  return dict(image=image, text=CLIP_TEXT, out_dim=16, temperature_init=14.3, **kw)


def _random_params(config, seed=0):
  """Random values for every parameter, so nothing can match by accident (no model.init: its
  compilation takes longer than these tests)."""
  model = TwoTowers(**config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _assert_identical(a, b):
  assert sorted(n for n, _ in pytree.named_leaves(a)) == sorted(n for n, _ in pytree.named_leaves(b))
  for (name, x), (_, y) in zip(pytree.named_leaves(a), pytree.named_leaves(b)):
    assert y.dtype == np.float32, name
    np.testing.assert_array_equal(x, y, err_msg=name)


def _embed(config, params, seed=0):
  model = TwoTowers(**config)
  img, txt = model.example_inputs(2)
  rng = np.random.default_rng(seed)
  img = rng.uniform(-1, 1, img.shape).astype(np.float32)
  txt = rng.integers(1, config["text"]["vocab_size"], txt.shape).astype(np.int32)
  return model.apply({"params": params}, img, txt)


# --- Round trips: export, load back, bit-identical.

@pytest.mark.parametrize("image", [CLIP_VIT, RESNET], ids=["vit", "resnet"])
@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_export_then_load_is_bit_identical(tmp_path, image, fmt):
  config = _clip(image, bias_init=-3.)
  params = _random_params(config)
  path = str(tmp_path / f"model.{fmt}")
  weights.export(params, config, path, fmt)
  _assert_identical(params, weights.load_params(path, config))


def test_safetensors_export_is_open_clips_state_dict(tmp_path):
  from safetensors.numpy import load_file
  config = _clip(RESNET, bias_init=-3.)
  params = _random_params(config)
  weights.export(params, config, str(tmp_path / "m.safetensors"), "safetensors")
  state = load_file(str(tmp_path / "m.safetensors"))
  assert state["logit_scale"].shape == () and state["logit_bias"].shape == ()
  np.testing.assert_array_equal(state["logit_scale"], params["t"][0])
  assert state["visual.conv1.weight"].shape == (4, 3, 3, 3)  # OIHW
  assert state["visual.layer2.0.downsample.0.weight"].shape == (64, 32, 1, 1)
  assert "visual.layer2.1.downsample.0.weight" not in state
  assert state["visual.attnpool.c_proj.weight"].shape == (16, 256)  # [out, in]
  assert state["visual.attnpool.positional_embedding"].shape == (5, 256)
  assert state["transformer.resblocks.1.attn.in_proj_weight"].shape == (96, 32)
  assert state["text_projection"].shape == (32, 16)
  # Batch norm is written as torch evaluates it: (x - 0) / sqrt((1 - eps) + eps) * w + b.
  np.testing.assert_array_equal(state["visual.bn1.running_mean"], 0)
  np.testing.assert_allclose(state["visual.bn1.running_var"] + 1e-5, 1, rtol=1e-7)
  assert state["visual.bn1.num_batches_tracked"].dtype == np.int64


def test_batch_norm_statistics_are_folded_into_scale_and_bias(tmp_path):
  from safetensors.numpy import load_file, save_file
  config = _clip(RESNET)
  weights.export(_random_params(config), config, str(tmp_path / "m.safetensors"), "safetensors")
  state = load_file(str(tmp_path / "m.safetensors"))
  rng = np.random.default_rng(0)
  w, b = state["visual.bn2.weight"], state["visual.bn2.bias"]
  mean = rng.normal(size=w.shape).astype(np.float32)
  var = rng.uniform(0.5, 2, size=w.shape).astype(np.float32)
  state.update({"visual.bn2.running_mean": mean, "visual.bn2.running_var": var})
  save_file(state, str(tmp_path / "stats.safetensors"))
  params = weights.load_params(str(tmp_path / "stats.safetensors"), config)
  x = rng.normal(size=(5, w.shape[0]))  # torch's eval-mode batch norm, in float64:
  expected = (x - mean) / np.sqrt(var.astype(np.float64) + 1e-5) * w + b
  got = x * params["img"]["bn2"]["scale"] + params["img"]["bn2"]["bias"]
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_npz_is_big_vision_layout_with_or_without_params_prefix(tmp_path):
  params = _random_params(SIGLIP)
  weights.export(params, SIGLIP, str(tmp_path / "m.npz"), "npz")
  with np.load(tmp_path / "m.npz") as z:
    flat = dict(z)
  assert "img/Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel" in flat and "b" in flat
  # A full train state: only its params/ entries load; bfloat16 is stored as 2-byte void.
  prefixed = {f"params/{k}": v for k, v in flat.items()}
  prefixed["opt/0/mu/t"] = np.zeros(1, np.float32)
  prefixed["params/t"] = np.asarray(flat["t"], ml_dtypes.bfloat16).view("V2")
  np.savez(tmp_path / "state.npz", **prefixed)
  loaded = weights.load_params(str(tmp_path / "state.npz"), SIGLIP)
  np.testing.assert_array_equal(loaded["t"], np.asarray(flat["t"], ml_dtypes.bfloat16)
                                .astype(np.float32))
  loaded["t"] = params["t"]
  _assert_identical(params, loaded)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_scanned_and_unscanned_layouts_convert_both_ways(tmp_path, fmt):
  config = _clip(CLIP_VIT)
  scanned = dict(config, image=dict(CLIP_VIT, scan=True), text=dict(CLIP_TEXT, scan=True))
  params = _random_params(config)
  weights.export(params, config, str(tmp_path / f"loop.{fmt}"), fmt)
  stacked = weights.load_params(str(tmp_path / f"loop.{fmt}"), scanned)
  kernel = "MlpBlock_0/Dense_0/kernel"
  np.testing.assert_array_equal(stacked["img"]["Transformer"]["encoderblock"]["MlpBlock_0"]
                                ["Dense_0"]["kernel"][1],
                                params["img"]["Transformer"]["encoderblock_1"]["MlpBlock_0"]
                                ["Dense_0"]["kernel"])
  assert f"txt/Encoder_0/encoderblock/{kernel}" in dict(pytree.named_leaves(stacked))
  # The scanned model computes what the unscanned one does with the same weights.
  np.testing.assert_allclose(_embed(scanned, stacked)[0], _embed(config, params)[0], atol=1e-5)
  weights.export(stacked, scanned, str(tmp_path / f"scan.{fmt}"), fmt)
  _assert_identical(params, weights.load_params(str(tmp_path / f"scan.{fmt}"), config))


def test_orbax_checkpoints_dir_step_dir_and_workdir(tmp_path):
  params = _random_params(SIGLIP)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
  for step, scale in ((3, 2.), (5, 1.)):
    state = {"params": jax.tree.map(lambda x: x * scale, params), "step": np.int32(step)}
    ckpt.save(step, state, {"position": step})
  ckpt.close()
  _assert_identical(params, weights.load_params(str(tmp_path / "checkpoints"), SIGLIP))
  _assert_identical(params, weights.load_params(str(tmp_path), SIGLIP))
  older = weights.load_params(str(tmp_path / "checkpoints" / "3"), SIGLIP)
  np.testing.assert_array_equal(older["t"], 2 * params["t"])


# --- Fitting to the model: resolution, text length, dont_load.

def test_posemb_resampling_is_bilinear_on_the_grid_and_keeps_the_class_position():
  grid = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 4, 3)
  cls = np.full((1, 1, 3), -7, np.float32)
  out = weights.resample_posemb(np.concatenate([cls, grid], axis=1), 1 + 9, num_prefix=1)
  assert out.shape == (1, 10, 3)
  np.testing.assert_array_equal(out[0, 0], cls[0, 0])
  corners = out[0, 1:].reshape(3, 3, 3)
  # Corners stay where they were (align-corners zoom); the centre is the mean of all four.
  np.testing.assert_allclose(corners[[0, 0, 2, 2], [0, 2, 0, 2]], grid[0], rtol=1e-6)
  np.testing.assert_allclose(corners[1, 1], grid[0].mean(0), rtol=1e-6)
  np.testing.assert_allclose(corners[0, 1], grid[0, :2].mean(0), rtol=1e-6)
  assert weights.resample_posemb(grid[:, :3], 9, 0) is None  # 3 tokens: no square grid.


@pytest.mark.parametrize("image", [CLIP_VIT, RESNET, SIGLIP["image"]], ids=["cls", "resnet", "bv"])
def test_load_at_a_new_resolution_resamples_position_embeddings(tmp_path, image):
  config = dict(SIGLIP, image=image)
  params = _random_params(config)
  weights.export(params, config, str(tmp_path / "m.npz"), "npz")
  bigger = dict(config, image=dict(image, image_size=2 * image["image_size"]))
  loaded = weights.load_params(str(tmp_path / "m.npz"), bigger)
  name = "img/attnpool/pos_embedding" if image is RESNET else "img/pos_embedding"
  old, new = dict(pytree.named_leaves(params))[name], dict(pytree.named_leaves(loaded))[name]
  prefix = new.shape[1] - 4 * (old.shape[1] - (image is not SIGLIP["image"]))
  assert prefix == (0 if image is SIGLIP["image"] else 1)
  np.testing.assert_array_equal(new[:, :prefix], old[:, :prefix])
  np.testing.assert_allclose(new[0, prefix], old[0, prefix], rtol=1e-6)  # top-left corner
  _embed(bigger, loaded)  # The model runs at the new size.


def test_text_position_embedding_is_cut_to_a_shorter_max_len(tmp_path):
  params = _random_params(SIGLIP)
  weights.export(params, SIGLIP, str(tmp_path / "m.npz"), "npz")
  shorter = dict(SIGLIP, text=dict(SIGLIP["text"], max_len=5))
  loaded = weights.load_params(str(tmp_path / "m.npz"), shorter)
  np.testing.assert_array_equal(loaded["txt"]["pos_embedding"], params["txt"]["pos_embedding"][:, :5])


def test_dont_load_keeps_init_values_and_needs_no_checkpoint_entry(tmp_path):
  params = _random_params(SIGLIP)
  flat = dict(pytree.named_leaves(params))
  np.savez(tmp_path / "m.npz", **{k: v for k, v in flat.items() if not k.startswith("img/head")})
  init = _random_params(SIGLIP, seed=1)
  loaded = weights.load_params(str(tmp_path / "m.npz"), SIGLIP, init_params=init,
                               dont_load=["img/head/.*", "t"])
  np.testing.assert_array_equal(loaded["img"]["head"]["kernel"], init["img"]["head"]["kernel"])
  np.testing.assert_array_equal(loaded["t"], init["t"])
  np.testing.assert_array_equal(loaded["b"], params["b"])
  with pytest.raises(weights.WeightsError, match="keep init_params' values, so pass init_params"):
    weights.load_params(str(tmp_path / "m.npz"), SIGLIP, dont_load=["img/head/.*"])
  with pytest.raises(ValueError, match="bad parameter-name regex"):
    weights.load_params(str(tmp_path / "m.npz"), SIGLIP, init_params=init, dont_load=["img/("])


# --- Errors.

def test_missing_and_unexpected_parameters_are_listed_by_name(tmp_path):
  weights.export(_random_params(SIGLIP), SIGLIP, str(tmp_path / "m.npz"), "npz")
  no_bias = dict(SIGLIP, bias_init=None, image=dict(SIGLIP["image"], pool_type="gap"))
  with pytest.raises(weights.WeightsError) as e:
    weights.load_params(str(tmp_path / "m.npz"), no_bias)
  msg = str(e.value)
  assert "unexpected (in the checkpoint, not in the model): b\n" in msg
  assert "unexpected (in the checkpoint, not in the model): img/MAPHead_0/probe" in msg
  assert "missing" not in msg.split("\n")[1]
  deeper = dict(SIGLIP, text=dict(SIGLIP["text"], depth=3))
  with pytest.raises(weights.WeightsError, match=r"missing \(in the model, not in the "
                     r"checkpoint\): txt/Encoder_0/encoderblock_2/LayerNorm_0/bias"):
    weights.load_params(str(tmp_path / "m.npz"), deeper)


def test_open_clip_weights_into_a_big_vision_shaped_model_say_which_options(tmp_path):
  config = _clip(CLIP_VIT)
  weights.export(_random_params(config), config, str(tmp_path / "m.safetensors"), "safetensors")
  with pytest.raises(weights.WeightsError, match=r"(?s)unexpected.*img/cls.*posemb_cls=True"):
    weights.load_params(str(tmp_path / "m.safetensors"), SIGLIP)
  shallow = dict(config, image=dict(CLIP_VIT, depth=1))
  with pytest.raises(weights.WeightsError,
                     match=r"unexpected .*: visual\.transformer\.resblocks\.1\.attn\.in_proj_bias"):
    weights.load_params(str(tmp_path / "m.safetensors"), shallow)


def test_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
  weights.export(_random_params(SIGLIP), SIGLIP, str(tmp_path / "m.npz"), "npz")
  wider = dict(SIGLIP, out_dim=24)
  with pytest.raises(weights.WeightsError,
                     match=r"img/head/kernel: checkpoint \(32, 16\) vs model \(32, 24\)"):
    weights.load_params(str(tmp_path / "m.npz"), wider)


def test_vocabulary_mismatch_names_both_sizes_and_the_tokenizer(tmp_path):
  from big_vision_lite.data import tokenizer as tok_lib
  weights.export(_random_params(SIGLIP), SIGLIP, str(tmp_path / "m.npz"), "npz")
  bigger = dict(SIGLIP, text=dict(SIGLIP["text"], vocab_size=256))
  with pytest.raises(weights.WeightsError, match=r"vocabulary mismatch: checkpoint .* embeds 64 "
                     r"tokens, model.text.vocab_size is 256 \(tokenizer .*shapes_sp.model' has 256 "
                     r"tokens\)"):
    weights.load_params(str(tmp_path / "m.npz"), bigger, tokenizer=tok_lib.SHAPES_MODEL)
  # The model matches the checkpoint, but the tokenizer emits ids past its table.
  with pytest.raises(weights.WeightsError, match="embeds 64 tokens, model.text.vocab_size is 64"):
    weights.load_params(str(tmp_path / "m.npz"), SIGLIP, tokenizer=tok_lib.SHAPES_MODEL)
  with pytest.raises(weights.WeightsError, match=r"embeds 64 tokens, model.text.vocab_size is 64 "
                     r"\(tokenizer 'clip' has 49408 tokens\)"):
    weights.load_params(str(tmp_path / "m.npz"), SIGLIP, tokenizer="clip")
  # A checkpoint with the tokenizer's table loads.
  weights.export(_random_params(bigger), bigger, str(tmp_path / "256.npz"), "npz")
  weights.load_params(str(tmp_path / "256.npz"), bigger,
                      tokenizer=tok_lib.get(tok_lib.SHAPES_MODEL))


def test_safetensors_export_refuses_architectures_open_clip_lacks(tmp_path):
  with pytest.raises(weights.WeightsError, match=r"(?s)model.image.pool_type='map' \(open_clip's "
                     r"ViT: 'tok'\).*model.text.head_bias=True.*Export as npz"):
    weights.export(_random_params(SIGLIP), SIGLIP, str(tmp_path / "m.safetensors"), "safetensors")
  assert not os.listdir(tmp_path)
  with pytest.raises(weights.WeightsError, match=r"unknown export format 'onnx'"):
    weights.export({}, SIGLIP, str(tmp_path / "m.onnx"), "onnx")


def test_unreadable_paths_and_torch_files_without_torch(tmp_path, monkeypatch):
  with pytest.raises(weights.WeightsError, match="not found"):
    weights.load_params(str(tmp_path / "nope.npz"), SIGLIP)
  (tmp_path / "m.ckpt").write_bytes(b"x")
  with pytest.raises(weights.WeightsError, match="unknown checkpoint format"):
    weights.load_params(str(tmp_path / "m.ckpt"), SIGLIP)
  (tmp_path / "m.pt").write_bytes(b"x")
  real_import = builtins.__import__
  def no_torch(name, *args, **kw):
    if name == "torch":
      raise ImportError("No module named 'torch'")
    return real_import(name, *args, **kw)
  monkeypatch.setattr(builtins, "__import__", no_torch)
  with pytest.raises(weights.WeightsError, match=r"(?s)needs torch: pip install -e '\.\[torch\]'"
                     r".*safetensors"):
    weights.load_params(str(tmp_path / "m.pt"), SIGLIP)


def test_torch_checkpoints_load_like_safetensors(tmp_path):
  torch = pytest.importorskip("torch")
  from safetensors.numpy import load_file
  config = _clip(RESNET)
  params = _random_params(config)
  weights.export(params, config, str(tmp_path / "m.safetensors"), "safetensors")
  state = {k: torch.from_numpy(v) for k, v in load_file(str(tmp_path / "m.safetensors")).items()}
  torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}},
             tmp_path / "m.pt")
  _assert_identical(params, weights.load_params(str(tmp_path / "m.pt"), config))


def test_transforms_are_inverse_pairs():
  rng = np.random.default_rng(0)
  arrays = {"linear": [rng.normal(size=(6, 4))], "conv": [rng.normal(size=(5, 3, 3, 2))],
            "lead1": [rng.normal(size=(5, 4))], "cls": [rng.normal(size=4)],
            "scalar": [np.float32(rng.normal())], "in_proj_weight": [rng.normal(size=(12, 4))],
            "in_proj_bias": [rng.normal(size=12)], "kv_weight": [rng.normal(size=(8, 4))],
            "kv_bias": [rng.normal(size=8)], "grid": [rng.normal(size=(16, 3))],
            "heads_in_weight": [rng.normal(size=(4, 4))],
            "heads_in_bias": [rng.normal(size=4)], "heads_out_weight": [rng.normal(size=(6, 4))],
            "copy": [rng.normal(size=3)]}
  assert set(arrays) == set(open_clip.TRANSFORMS) - {"bn"}
  for name, a in arrays.items():
    forward, backward = open_clip.TRANSFORMS[name]
    np.testing.assert_array_equal(backward(forward(a, 2), 2)[0], a[0], err_msg=name)
  # q/k/v: torch computes x @ W.T + b; our query kernel [D, H, hd] must give the same per head.
  w, b = arrays["in_proj_weight"][0], arrays["in_proj_bias"][0]
  (qk, kk, vk), (qb, kb, vb) = (open_clip.TRANSFORMS["in_proj_weight"][0]([w], 2),
                                open_clip.TRANSFORMS["in_proj_bias"][0]([b], 2))
  x = rng.normal(size=(3, 4))
  np.testing.assert_allclose(np.einsum("nd,dhk->nhk", x, kk).reshape(3, -1) + kb.reshape(-1),
                             x @ w[4:8].T + b[4:8])


def test_export_tool_writes_a_trained_runs_parameters(tmp_path):
  from big_vision_lite import config as config_lib
  from big_vision_lite import train
  from big_vision_lite.tools import export as export_tool
  from tests.test_train import CONFIG, TINY
  image = dict(variant="mu/8", width=32, depth=1, mlp_dim=64, num_heads=2, pool_type="tok",
               posemb_cls=True, ln_pre=True, patch_bias=False, head_bias=False, act="quick_gelu",
               image_size=32)
  text = dict(variant="mu", width=32, depth=1, mlp_dim=64, num_heads=2, vocab_size=256,
              causal=True, pool_type="argmax", head_bias=False, act="quick_gelu", max_len=12)
  train.main(["--config", CONFIG, "--workdir", str(tmp_path)] + TINY + [
      "--config.total_steps=3", "--config.evals={}", "--config.loss=softmax",
      "--config.model.bias_init=None", f"--config.model.image={image!r}",
      f"--config.model.text={text!r}"])
  trained = ckpt_lib.restore_params(str(tmp_path / "checkpoints"))
  model_config = config_lib.from_json(str(tmp_path / "config.json")).model.to_dict()
  for fmt in weights.FORMATS:
    out = export_tool.main(["--workdir", str(tmp_path), "--step", "3", "--format", fmt,
                            "--output", str(tmp_path / f"run.{fmt}")])
    _assert_identical(trained, weights.load_params(out, model_config))


# --- Parity with the reference code: fixtures made by big_vision and open_clip (tests/data/).

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _fixture(name):
  with np.load(os.path.join(DATA, name)) as z:
    io = dict(z)
  io["config"] = json.loads(str(io["config"]))
  return io


def _big_vision_config(ref, image_size=32):
  """Our TwoTowers config for a big_vision two_towers config (explicit sizes, no variants)."""
  image = {k: v for k, v in ref["image"].items()}
  text = {k: v for k, v in ref["text"].items()}
  return dict(image=dict(image, image_size=image_size), text=dict(text, max_len=8),
              out_dim=ref["out_dim"], temperature_init=ref["temperature_init"],
              bias_init=ref["bias_init"])


def _open_clip_config(ref, bias: bool):
  """Our TwoTowers config for `open_clip.CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=True)`."""
  vision, text = ref["vision_cfg"], ref["text_cfg"]
  clip = dict(act="quick_gelu", ln_eps=1e-5)
  if isinstance(vision["layers"], list):
    image = dict(type="resnet", layers=tuple(vision["layers"]), width=vision["width"],
                 num_heads=vision["width"] * 32 // vision["head_width"])
  else:
    image = dict(width=vision["width"], depth=vision["layers"], mlp_dim=4 * vision["width"],
                 num_heads=vision["width"] // vision["head_width"],
                 patch_size=(vision["patch_size"],) * 2, pool_type="tok", posemb_cls=True,
                 ln_pre=True, patch_bias=False, head_bias=False, **clip)
  return dict(
      image=dict(image, image_size=vision["image_size"]),
      text=dict(width=text["width"], depth=text["layers"], mlp_dim=4 * text["width"],
                num_heads=text["heads"], vocab_size=text["vocab_size"],
                max_len=text["context_length"], causal=True, pool_type="argmax",
                head_bias=False, **clip),
      out_dim=ref["embed_dim"], temperature_init=10., bias_init=-10. if bias else None)


def _assert_outputs(config, params, io):
  zimg, ztxt, out = jax.jit(TwoTowers(**config).apply)({"params": params}, io["images"],
                                                        io["texts"])
  np.testing.assert_allclose(zimg, io["img_emb"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(ztxt, io["txt_emb"], atol=1e-5, rtol=0)
  return out


@pytest.mark.parametrize("ckpt", ["bv_siglip.npz", "bv_siglip_bare.npz"])
@pytest.mark.parametrize("scan", [False, True])
def test_big_vision_checkpoint_gives_big_vision_outputs(ckpt, scan):
  io = _fixture("bv_siglip_io.npz")
  config = _big_vision_config(io["config"])
  for tower in ("image", "text"):
    config[tower]["scan"] = scan
  out = _assert_outputs(config, weights.load_params(os.path.join(DATA, ckpt), config), io)
  np.testing.assert_allclose(out["t"], io["t"][0], rtol=1e-6)
  np.testing.assert_allclose(out["b"], io["b"][0], rtol=1e-6)


@pytest.mark.parametrize("scan", [True, False])
def test_big_vision_scanned_checkpoint_gives_big_vision_outputs(scan):
  io = _fixture("bv_siglip_scan_io.npz")
  config = _big_vision_config(io["config"])
  for tower in ("image", "text"):
    config[tower]["scan"] = scan
  out = _assert_outputs(config, weights.load_params(os.path.join(DATA, "bv_siglip_scan.npz"),
                                                    config), io)
  np.testing.assert_allclose(out["t"], io["t"][0], rtol=1e-6)


def test_big_vision_checkpoint_at_a_new_resolution_as_big_vision_resamples_it():
  io = _fixture("bv_siglip_resample_io.npz")
  config = _big_vision_config(io["config"], image_size=int(io["image_size"]))
  params = weights.load_params(os.path.join(DATA, "bv_siglip.npz"), config)
  np.testing.assert_allclose(params["img"]["pos_embedding"], io["pos_embedding"], atol=1e-7)
  _assert_outputs(config, params, io)


def test_npz_export_of_a_big_vision_checkpoint_reproduces_it():
  io = _fixture("bv_siglip_io.npz")
  config = _big_vision_config(io["config"])
  bare = os.path.join(DATA, "bv_siglip_bare.npz")
  out = os.path.join(os.environ.get("PYTEST_TMPDIR", "/tmp"), f"bv_{os.getpid()}.npz")
  weights.export(weights.load_params(bare, config), config, out, "npz")
  with np.load(bare) as a, np.load(out) as b:
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  os.remove(out)


def _naflex_config(ref, **image):
  """Our TwoTowers config for big_vision's NaFlex two_towers config."""
  bv = ref["image"]
  return dict(image={**dict(width=bv["width"], depth=bv["depth"], mlp_dim=bv["mlp_dim"],
                            num_heads=bv["num_heads"], pool_type=bv["pool_type"],
                            patch_size=(4, 4), naflex=True, posemb_grid=bv["nposemb"]), **image},
              text=dict(ref["text"], max_len=8), out_dim=ref["out_dim"],
              temperature_init=ref["temperature_init"], bias_init=ref["bias_init"])


@pytest.mark.parametrize("scan", [False, True])
def test_big_vision_naflex_checkpoint_gives_big_vision_outputs(scan):
  """4 images of aspect ratios 1:4 to 8:3, padded: big_vision's naflex_vit.py embeddings."""
  io = _fixture("bv_naflex_io.npz")
  config = _naflex_config(io["config"], scan=scan)
  params = weights.load_params(os.path.join(DATA, "bv_naflex.npz"), config)
  images = {k: io[k] for k in ("patches", "yidx", "xidx", "mask")}
  out = _assert_outputs(config, params, dict(io, images=images))
  np.testing.assert_allclose(out["b"], io["b"][0], rtol=1e-6)


def test_naflex_and_square_checkpoints_refuse_the_other_config():
  naflex = _fixture("bv_naflex_io.npz")
  with pytest.raises(weights.WeightsError, match="is a NaFlex image tower .* set "
                                                 "model.image.naflex=True"):
    weights.load_params(os.path.join(DATA, "bv_naflex.npz"),
                        _big_vision_config(dict(naflex["config"], image=dict(
                            patch_size=(4, 4), width=32, depth=2, mlp_dim=64, num_heads=2))))
  with pytest.raises(weights.WeightsError, match="posemb_grid=4"):
    weights.load_params(os.path.join(DATA, "bv_naflex.npz"),
                        _naflex_config(naflex["config"], posemb_grid=16))
  square = _fixture("bv_siglip_io.npz")
  with pytest.raises(weights.WeightsError, match="is a square-image ViT .*model.image.naflex=True: set naflex=False"):
    weights.load_params(os.path.join(DATA, "bv_siglip.npz"),
                        _naflex_config(dict(square["config"], image=naflex["config"]["image"])))


@pytest.mark.parametrize("name,bias", [("oc_vit", False), ("oc_vit_bias", True),
                                       ("oc_resnet", False)])
def test_open_clip_state_dict_gives_open_clip_outputs(tmp_path, name, bias):
  from safetensors.numpy import load_file
  io = _fixture(f"{name}_io.npz")
  config = _open_clip_config(io["config"], bias)
  path = os.path.join(DATA, f"{name}.safetensors")
  params = weights.load_params(path, config)
  out = _assert_outputs(config, params, io)
  np.testing.assert_allclose(out["t"], np.exp(io["logit_scale"]), rtol=1e-6)
  if bias:
    np.testing.assert_allclose(out["b"], io["logit_bias"], rtol=1e-6)
  # Exported back, it is open_clip's state dict again (batch norm with its statistics folded:
  # mean 0 and var 1 - eps, the same function).
  weights.export(params, config, str(tmp_path / "back.safetensors"), "safetensors")
  ref, back = load_file(path), load_file(str(tmp_path / "back.safetensors"))
  assert sorted(ref) == sorted(back)
  for k in ref:
    if not re.search(r"(bn\d|downsample\.1)\.", k):
      np.testing.assert_array_equal(ref[k], back[k], err_msg=k)


class _Exploit:  # Unpickling it would create the file: it must never happen.
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_damaged_weight_files_are_clear_errors_and_never_unpickled(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  np.savez(tmp_path / "good.npz", a=np.arange(4096.0), b=np.zeros(3))
  save_file({"x": np.ones((64, 64), np.float32)}, str(tmp_path / "good.safetensors"))
  npz, st = (tmp_path / "good.npz").read_bytes(), (tmp_path / "good.safetensors").read_bytes()
  marker = tmp_path / "unpickled"
  np.save(tmp_path / "obj.npy", np.array([_Exploit(str(marker))], dtype=object),
          allow_pickle=True)
  with zipfile.ZipFile(tmp_path / "object.npz", "w") as z:
    z.write(tmp_path / "obj.npy", "w.npy")
  cases = {
      "random.npz": (np.random.RandomState(0).bytes(3000), r"not a readable \.npz .*starts "
                     r"with b'.*', not a zip's"),
      "pickle.npz": (pickle.dumps(_Exploit(str(marker))), r"not a readable \.npz"),
      "empty.npz": (b"", r"not a readable \.npz .*it is empty"),
      "cut.npz": (npz[:len(npz) // 2], r"zip directory \(at the end\) is missing: it was cut "
                  "short"),
      "cut.safetensors": (st[:len(st) // 2], r"not a readable \.safetensors \(SafetensorError: "),
      "random.safetensors": (np.random.RandomState(1).bytes(500), r"not a readable \.safetensors"),
      "empty.safetensors": (b"", r"not a readable \.safetensors"),
  }
  for name, (data, message) in cases.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(weights.WeightsError, match=message):
      weights.read(str(tmp_path / name))
  with pytest.raises(weights.WeightsError, match=r"holds object \(pickled\) arrays, which are "
                                                 "never unpickled"):
    weights.read(str(tmp_path / "object.npz"))
  assert not marker.exists()
  assert set(weights.read(str(tmp_path / "good.npz"))[0]) == {"a", "b"}
