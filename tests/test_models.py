"""Towers: parameter counts and names, position embeddings, pooling, two-tower outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_lite import pytree
from big_vision_lite.models import vit
from big_vision_lite.models.text import TextTransformer
from big_vision_lite.models.two_towers import TwoTowers


def _count(model, *inputs):
  params = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)), params


def test_vit_b16_parameter_count_is_86m():
  n, _ = _count(vit.ViT(variant="B/16", pool_type="tok"), jnp.zeros((1, 224, 224, 3)))
  assert n == 85_797_888  # ViT-B/16 with class token, no classifier head (ViT paper: ~86M)


@pytest.mark.parametrize("variant,width,depth", [("S/16", 384, 12), ("L/14", 1024, 24),
                                                 ("So400m/14", 1152, 27)])
def test_variant_table(variant, width, depth):
  hp = vit.decode_variant(variant)
  assert (hp["width"], hp["depth"]) == (width, depth)
  assert hp["patch_size"] == (int(variant.split("/")[1]),) * 2


def test_bad_variant_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown model variant 'Q'.*'So400m'"):
    vit.decode_variant("Q/16")


def test_param_names_follow_big_vision_siglip_layout():
  model = TwoTowers(image=dict(variant="mu/8", pool_type="map"),
                    text=dict(variant="mu", vocab_size=50), out_dim=16, bias_init=-10.)
  _, params = _count(model, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 8), jnp.int32))
  names = {name for name, _ in pytree.named_leaves(params)}
  for expected in ["t", "b", "img/embedding/kernel", "img/pos_embedding",
                   "img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
                   "img/Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel",
                   "img/Transformer/encoder_norm/scale", "img/MAPHead_0/probe", "img/head/kernel",
                   "txt/Embed_0/embedding", "txt/pos_embedding",
                   "txt/Encoder_0/encoderblock_0/LayerNorm_0/scale", "txt/head/kernel"]:
    assert expected in names, (expected, sorted(names))


def test_sincos_posemb_matches_formula():
  pe = vit.posemb_sincos_2d(3, 4, 8)
  assert pe.shape == (1, 12, 8)
  # Token (y=1, x=2) is index 6; omega = [1, 1e-4] for width/4 = 2.
  omega = np.array([1.0, 1e-4])
  expected = np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(omega), np.cos(omega)])
  np.testing.assert_allclose(pe[0, 6], expected, rtol=1e-6)


@pytest.mark.parametrize("pool", ["map", "gap", "tok"])
def test_vit_pooling_shapes(pool):
  model = vit.ViT(variant="mu/8", pool_type=pool, posemb="sincos2d", num_classes=7)
  x = jnp.ones((2, 32, 32, 3))
  params = model.init(jax.random.key(0), x)
  out, aux = model.apply(params, x)
  assert out.shape == (2, 7) and aux["pre_logits"].shape == (2, 32)
  assert aux["encoded"].shape == (2, 16 + (pool == "tok"), 32)


@pytest.mark.parametrize("pool", ["last", "first", "gap", "map"])
def test_text_pooling_shapes(pool):
  model = TextTransformer(vocab_size=20, variant="mu", pool_type=pool)
  x = jnp.ones((3, 6), jnp.int32)
  out, _ = model.apply(model.init(jax.random.key(0), x), x)
  assert out.shape == (3, 32)


def test_two_towers_normalised_embeddings_temperature_and_bias():
  model = TwoTowers(image=dict(variant="mu/8"), text=dict(variant="mu", vocab_size=30),
                    out_dim=(12, 12), temperature_init=10., bias_init=-5.)
  img, txt = jnp.ones((2, 16, 16, 3)), jnp.ones((2, 5), jnp.int32)
  params = model.init(jax.random.key(1), img, txt)
  zimg, ztxt, out = model.apply(params, img, txt)
  np.testing.assert_allclose(np.linalg.norm(zimg, axis=1), 1, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(ztxt, axis=1), 1, rtol=1e-5)
  np.testing.assert_allclose(float(out["t"]), 10., rtol=1e-6)
  np.testing.assert_allclose(float(out["b"]), -5.)
  zimg_only, none, _ = model.apply(params, img, None)
  assert none is None
  np.testing.assert_allclose(zimg_only, zimg, rtol=1e-6)


def test_bfloat16_matmuls_keep_float32_params_and_close_outputs():
  kw = dict(image=dict(variant="mu/8"), text=dict(variant="mu", vocab_size=30), out_dim=8)
  img, txt = jax.random.normal(jax.random.key(0), (2, 16, 16, 3)), jnp.ones((2, 5), jnp.int32)
  params = TwoTowers(**kw).init(jax.random.key(1), img, txt)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  z32 = TwoTowers(**kw).apply(params, img, txt)[0]
  z16 = TwoTowers(**kw, dtype_mm="bfloat16").apply(params, img, txt)[0]
  assert z16.dtype == jnp.float32
  np.testing.assert_allclose(z16, z32, atol=5e-2)


def test_scan_and_remat_compute_the_same_function_and_gradients():
  from big_vision_lite.models import layers
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  plain = layers.Encoder(depth=3, mlp_dim=32, num_heads=2)
  params = plain.init(jax.random.key(1), x)["params"]
  # The scanned encoder holds the same blocks stacked on a leading axis.
  stacked = {"encoderblock": jax.tree.map(lambda *a: jnp.stack(a),
                                          *[params[f"encoderblock_{i}"] for i in range(3)]),
             "encoder_norm": params["encoder_norm"]}
  loss = lambda m, p: jnp.sum(m.apply({"params": p}, x) ** 2)
  ref, ref_grad = jax.value_and_grad(lambda p: loss(plain, p))(params)
  for scan, remat, p in [(True, "none", stacked), (False, "nothing_saveable", params),
                         (True, "dots_saveable", stacked)]:
    model = layers.Encoder(depth=3, mlp_dim=32, num_heads=2, scan=scan, remat_policy=remat)
    val, grad = jax.value_and_grad(lambda p: loss(model, p))(p)
    np.testing.assert_allclose(val, ref, rtol=1e-5)
    if scan:
      grad = {f"encoderblock_{i}": jax.tree.map(lambda g: g[i], grad["encoderblock"])
              for i in range(3)} | {"encoder_norm": grad["encoder_norm"]}
    # atol: the key-projection bias has an exactly-zero gradient (softmax is shift invariant),
    # so float32 noise of ~1e-5 is all there is to compare there; other gradients are O(1).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                 grad, ref_grad)
