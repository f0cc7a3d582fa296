"""Towers: parameter counts and names, position embeddings, pooling, two-tower outputs."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_lite import pytree
from big_vision_lite.models import layers, resnet, vit
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


def _random(module, *inputs):
  """Random values of the right shapes (model.init's compilation would dominate these tests)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"]
  rng = np.random.default_rng(0)  # numpy: jax.random would compile a sampler per shape.
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


# --- CLIP options: each one on and off.

def _ln(x, eps):
  x = np.asarray(x, np.float64)
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


@pytest.mark.parametrize("act,fn", [
    ("gelu_tanh", lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    ("gelu", lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))),
    ("quick_gelu", lambda x: x / (1 + np.exp(-1.702 * x)))])
def test_activations_match_their_formulas(act, fn):
  from big_vision_lite.models import layers
  x = np.linspace(-4, 4, 101)
  np.testing.assert_allclose(layers.activation(act)(jnp.asarray(x, jnp.float32)), fn(x),
                             atol=2e-6)
  with pytest.raises(ValueError, match="unknown act 'relu'.*quick_gelu"):
    layers.activation("relu")


def test_layernorm_epsilon_option_reaches_every_layernorm():
  from big_vision_lite.models import layers
  # Tiny-variance tokens make epsilon matter: the encoder's final norm shows which one was used.
  x = 1e-3 * jax.random.normal(jax.random.key(0), (1, 3, 8))
  for eps in (1e-6, 1e-5):
    enc = layers.Encoder(depth=0, mlp_dim=16, num_heads=2, ln_eps=eps)
    y = enc.apply(enc.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(y, _ln(x, eps), rtol=1e-4, atol=1e-5)
  model = vit.ViT(variant="mu/8", pool_type="tok", ln_pre=True, ln_eps=1e-5)
  bound = model.bind({"params": _random(model, jnp.zeros((1, 16, 16, 3)))})
  bound(jnp.zeros((1, 16, 16, 3)))
  assert {m.epsilon for m in _submodules(bound) if isinstance(m, nn.LayerNorm)} == {1e-5}


def _submodules(module):
  out = []
  for child in module._state.children.values():  # pylint: disable=protected-access
    if isinstance(child, nn.Module):
      out += [child] + _submodules(child)
  return out


def _vit_names(**kw):
  model = vit.ViT(variant="mu/8", num_classes=6, **kw)
  params = _random(model, jnp.zeros((2, 32, 32, 3)))
  out, aux = model.apply({"params": params}, jnp.ones((2, 32, 32, 3)))
  assert out.shape == (2, 6)
  return {n: x.shape for n, x in pytree.named_leaves(params)}, aux


def test_vit_clip_options_change_exactly_their_parameters():
  base, aux = _vit_names(pool_type="tok")
  assert base["pos_embedding"] == (1, 16, 32) and base["embedding/bias"] == (32,)
  assert "ln_pre/scale" not in base and base["head/bias"] == (6,)
  clip, aux = _vit_names(pool_type="tok", posemb_cls=True, ln_pre=True, patch_bias=False,
                         head_bias=False, act="quick_gelu", ln_eps=1e-5)
  assert clip["pos_embedding"] == (1, 17, 32)  # The class token has a position too.
  assert clip["ln_pre/scale"] == clip["ln_pre/bias"] == (32,)
  assert "embedding/bias" not in clip and "head/bias" not in clip
  assert set(clip) - set(base) == {"ln_pre/scale", "ln_pre/bias"}
  assert set(base) - set(clip) == {"embedding/bias", "head/bias"}
  assert aux["encoded"].shape == (2, 17, 32)
  with pytest.raises(ValueError, match="posemb_cls=True .* needs pool_type='tok'"):
    _vit_names(pool_type="map", posemb_cls=True)


def test_posemb_cls_adds_the_class_position_before_the_encoder():
  model = vit.ViT(variant="mu/8", pool_type="tok", posemb_cls=True, ln_pre=True)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
  params = _random(model, x)
  # Shifting the class token by d and its position by -d leaves the model's function unchanged,
  # which holds only if both are summed before anything else touches the class token.
  d = jax.random.normal(jax.random.key(2), (1, 1, 32))
  params = jax.tree.map(jnp.asarray, params)
  moved = dict(params, cls=params["cls"] + d,
               pos_embedding=params["pos_embedding"].at[:, :1].add(-d))
  np.testing.assert_allclose(model.apply({"params": moved}, x)[0],
                             model.apply({"params": params}, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_causal_text_tower_ignores_later_tokens(causal):
  model = TextTransformer(vocab_size=20, variant="mu", causal=causal, pool_type="first")
  a = jnp.array([[3, 4, 5, 6, 7]], jnp.int32)
  b = a.at[0, 3:].set(9)  # Same first three tokens.
  params = {"params": _random(model, a)}
  ea = model.apply(params, a)[1]["encoded"]
  eb = model.apply(params, b)[1]["encoded"]
  same = np.allclose(ea[0, :3], eb[0, :3], atol=1e-6)
  assert same == causal


def test_argmax_pooling_takes_the_largest_token_id_position():
  model = TextTransformer(vocab_size=50, variant="mu", pool_type="argmax", causal=True,
                          head_bias=False, num_classes=8)
  text = jnp.array([[49, 1, 0, 0], [3, 4, 49, 0], [2, 3, 4, 49]], jnp.int32)
  params = {"params": _random(model, text)}
  assert "bias" not in params["params"]["head"]
  _, aux = model.apply(params, text)
  np.testing.assert_array_equal(aux["pre_logits"], aux["encoded"][np.arange(3), [0, 2, 3]])


# --- ResNet tower.

@pytest.mark.parametrize("variant,size,count", [
    ("50", 224, 38_316_896), ("101", 224, 56_259_936), ("50x4", 288, 87_137_080)])
def test_resnet_variants_parameter_counts_match_clip(variant, size, count):
  # CLIP's RN50 / RN101 / RN50x4 image towers with their 1024 / 512 / 640-d embeddings.
  out_dim = {"50": 1024, "101": 512, "50x4": 640}[variant]
  n, _ = _count(resnet.ResNet(variant=variant, num_classes=out_dim), jnp.zeros((1, size, size, 3)))
  assert n == count


def test_resnet_blocks_start_as_the_identity():
  # Each block's last batch-norm scale starts at zero (the others at one), so a block without
  # downsampling computes relu(x) at initialisation and the tower trains without batch stats.
  x = jnp.ones((1, 2, 2, 3))
  for zero_init, scale in ((True, 0), (False, 1)):
    bn = resnet.FrozenBatchNorm(zero_init=zero_init).init(jax.random.key(0), x)["params"]
    np.testing.assert_array_equal(bn["scale"], np.full(3, scale))
    np.testing.assert_array_equal(bn["bias"], np.zeros(3))
  block = resnet.Bottleneck(planes=8)
  h = jax.random.normal(jax.random.key(2), (1, 4, 4, 32))
  params = _random(block, h)
  params["bn3"] = {"scale": jnp.zeros(32), "bias": jnp.zeros(32)}
  np.testing.assert_array_equal(block.apply({"params": params}, h), jax.nn.relu(h))


def test_resnet_tiny_shapes():
  model = resnet.ResNet(layers=(1, 2, 1, 1), width=8, num_heads=2, num_classes=16, image_size=64)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  params = _random(model, x)
  out, aux = jax.jit(model.apply)({"params": params}, x)
  assert out.shape == (2, 16) and aux["encoded"].shape == (2, 4, 256)  # 64 / 32 = 2x2 tokens
  names = {n for n, _ in pytree.named_leaves(params)}
  assert "layer2_0/downsample_conv/kernel" in names and "layer2_1/downsample_conv/kernel" not in names
  assert "layer1_0/downsample_conv/kernel" in names  # 16 -> 32 channels at stride 1
  with pytest.raises(ValueError, match="ResNet built for 64x64 images got 32x32"):
    model.apply({"params": params}, x[:, :32, :32])


def test_resnet_strided_blocks_average_pool_before_the_1x1_convolutions():
  # With 1x1 kernels equal to the identity and unit batch norms, a strided block computes
  # relu(avgpool(relu(x)) + avgpool(x)) for x >= 0: both branches are anti-aliased poolings.
  block = resnet.Bottleneck(planes=4, stride=2)
  x = jnp.abs(jax.random.normal(jax.random.key(0), (1, 4, 4, 16)))
  params = jax.tree.map(np.asarray, _random(block, x))
  for bn in ("bn1", "bn2", "bn3", "downsample_bn"):
    params[bn] = {"scale": np.ones_like(params[bn]["scale"]), "bias": np.zeros_like(params[bn]["bias"])}
  eye = lambda i, o: np.eye(i, o, dtype=np.float32)[None, None]
  params["conv1"]["kernel"] = eye(16, 4)
  params["conv2"]["kernel"] = np.zeros((3, 3, 4, 4), np.float32)
  params["conv2"]["kernel"][1, 1] = np.eye(4)
  params["conv3"]["kernel"] = eye(4, 16)
  params["downsample_conv"]["kernel"] = eye(16, 16)
  y = block.apply({"params": params}, x)
  pooled = x.reshape(1, 2, 2, 2, 2, 16).mean(axis=(2, 4))
  expected = np.concatenate([2 * pooled[..., :4], pooled[..., 4:]], axis=-1)
  np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_two_towers_picks_the_image_tower_by_type():
  model = TwoTowers(image=dict(type="resnet", layers=(1, 1, 1, 1), width=8, num_heads=2),
                    text=dict(variant="mu", vocab_size=30), out_dim=12)
  img, txt = jnp.ones((2, 64, 64, 3)), jnp.ones((2, 5), jnp.int32)
  params = _random(model, img, txt)
  zimg, ztxt, _ = jax.jit(model.apply)({"params": params}, img, txt)
  assert zimg.shape == ztxt.shape == (2, 12)
  assert "attnpool" in params["img"]
  with pytest.raises(ValueError, match="unknown model.image type 'convnext'.*'resnet'"):
    TwoTowers(image=dict(type="convnext"), text=dict(variant="mu", vocab_size=30)).init(
        jax.random.key(0), img, txt)


def _naive_attention(q, k, v, mask):
  """float64 softmax(q k^T / sqrt(d)) v per head, masked logits dropped: [B, Lq, H, Dh]."""
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask, logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  return np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_naive_softmax_with_padding_and_causal_masks(causal):
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(2, 5, 3, 8)) for _ in range(3))
  pad = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  mask = np.broadcast_to(pad[:, None, None, :], (2, 3, 5, 5))
  if causal:
    mask = mask & np.tril(np.ones((5, 5), bool))
  got = layers.dot_product_attention(*(jnp.asarray(t, jnp.float32) for t in (q, k, v)),
                                     mask=layers.key_mask(jnp.asarray(pad)), is_causal=causal)
  np.testing.assert_allclose(got, _naive_attention(q, k, v, mask), atol=1e-5)


def _patchify(images: np.ndarray, p: int):
  """[B, H, W, 3] -> NaFlex input over the whole grid, patches in (row, column, channel) order."""
  b, h, w, _ = images.shape
  patches = images.reshape(b, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
  y, x = np.divmod(np.arange((h // p) * (w // p)), w // p)
  return dict(patches=patches.reshape(b, -1, p * p * 3), yidx=np.tile(y, (b, 1)).astype(np.int32),
              xidx=np.tile(x, (b, 1)).astype(np.int32), mask=np.ones((b, y.size), bool))


@pytest.mark.parametrize("pool", ["map", "gap"])
def test_naflex_vit_is_the_square_vit_on_its_grid_and_ignores_padding(pool):
  """On a full G x G grid the resize is the identity, so NaFlex with the Conv kernel flattened
  is the square ViT; padding patches (any values, any indices) change nothing."""
  kw = dict(width=16, depth=2, mlp_dim=32, num_heads=2, patch_size=(4, 4), num_classes=8,
            pool_type=pool)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  square = vit.ViT(**kw)
  params = square.init(jax.random.key(0), images)["params"]
  naflex = vit.ViT(**kw, naflex=True, posemb_grid=4)
  flex_params = {**params, "embedding": {"kernel": params["embedding"]["kernel"].reshape(48, 16),
                                         "bias": params["embedding"]["bias"]},
                 "pos_embedding": params["pos_embedding"].reshape(4, 4, 16)}
  assert (jax.tree.map(np.shape, naflex.init(jax.random.key(0), _patchify(images, 4))["params"])
          == jax.tree.map(np.shape, flex_params))
  want = square.apply({"params": params}, images)[0]
  inputs = _patchify(images, 4)
  np.testing.assert_allclose(naflex.apply({"params": flex_params}, inputs)[0], want, atol=1e-5)
  padded = {k: np.concatenate([v, np.full_like(v[:, :5], 9)], axis=1) for k, v in inputs.items()}
  padded["mask"][:, 16:] = False
  np.testing.assert_allclose(naflex.apply({"params": flex_params}, padded)[0], want, atol=1e-5)


def _antialiased_bilinear(size: int, grid: int) -> np.ndarray:
  """float64 [size, grid] weights: a triangle kernel centred at each output pixel's centre in
  input coordinates, widened by grid / size when shrinking, normalised."""
  scale = size / grid
  centres = (np.arange(size) + 0.5) / scale
  dist = np.abs(np.arange(grid)[None] + 0.5 - centres[:, None]) / max(1 / scale, 1)
  w = np.maximum(0, 1 - dist)
  return w / w.sum(1, keepdims=True)


def test_naflex_posemb_is_the_grid_resized_per_image_and_read_at_each_patch():
  rng = np.random.default_rng(0)
  pos = rng.normal(size=(4, 4, 3))
  shapes = [(1, 9), (2, 7), (3, 3), (6, 2), (4, 4), (5, 3)]  # One batch, padded to 16 patches.
  yidx, xidx = np.full((2, len(shapes), 16), 15, np.int32)
  for i, (rows, cols) in enumerate(shapes):
    yidx[i, :rows * cols], xidx[i, :rows * cols] = np.divmod(np.arange(rows * cols), cols)
  got = vit.naflex_posemb(jnp.asarray(pos, jnp.float32), yidx, xidx, yidx < 15)
  for i, (rows, cols) in enumerate(shapes):
    grid = np.einsum("ya,xc,acd->yxd", _antialiased_bilinear(rows, 4),
                     _antialiased_bilinear(cols, 4), pos)
    n = rows * cols
    np.testing.assert_allclose(got[i, :n], grid[yidx[i, :n], xidx[i, :n]], atol=1e-5,
                               err_msg=f"{rows}x{cols}")


def test_naflex_input_errors_name_the_fix():
  images = np.zeros((1, 8, 8, 3), np.float32)
  kw = dict(width=8, depth=1, mlp_dim=8, num_heads=2, patch_size=(4, 4))
  with pytest.raises(ValueError, match="takes a dict with keys .*`naflex` preprocessing op"):
    vit.ViT(**kw, naflex=True).init(jax.random.key(0), images)
  with pytest.raises(ValueError, match="naflex=True for NaFlex patches"):
    vit.ViT(**kw).init(jax.random.key(0), _patchify(images, 4))
  with pytest.raises(ValueError, match="pool_type in \\('map', 'gap'\\)"):
    vit.ViT(**kw, naflex=True, pool_type="tok").init(jax.random.key(0), _patchify(images, 4))
  with pytest.raises(ValueError, match="patch size \\(2, 2\\) needs 12"):
    vit.ViT(**{**kw, "patch_size": (2, 2)}, naflex=True).init(jax.random.key(0),
                                                               _patchify(images, 4))
