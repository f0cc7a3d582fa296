"""LoRA adapters: identity when new, merged kernels give the same function, targets."""

import jax
import numpy as np
import pytest

from big_vision_lite import pytree
from big_vision_lite.models import lora
from big_vision_lite.models.two_towers import TwoTowers

MODEL = TwoTowers(image=dict(variant="mu/8", image_size=16, depth=2, num_heads=2),
                  text=dict(variant="mu", vocab_size=20, max_len=5, depth=1, num_heads=2),
                  out_dim=8)


def _inputs():
  rng = np.random.default_rng(0)
  images, tokens = MODEL.example_inputs(3)
  return (rng.uniform(-1, 1, images.shape).astype(np.float32),
          rng.integers(1, 20, tokens.shape).astype(np.int32))


def _embeddings(params):
  zimg, ztxt, _ = lora.apply(MODEL, params, *_inputs(), alpha=8.0)
  return np.asarray(zimg), np.asarray(ztxt)


def test_new_adapters_leave_the_function_unchanged_and_merge_exactly():
  inputs = _inputs()
  params = MODEL.init(jax.random.key(0), *inputs)["params"]
  adapters = lora.init(MODEL, params, inputs, lora.DEFAULT_TARGETS, 4, jax.random.key(1))
  base = _embeddings(params)
  for got, want in zip(_embeddings({**params, "lora": adapters}), base):
    np.testing.assert_array_equal(got, want)  # B = 0: exactly the base model.
  # Trained adapters (here: perturbed B) change the function; merging reproduces it.
  trained = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.key(2), x.shape),
                         adapters)
  adapted = _embeddings({**params, "lora": trained})
  assert np.abs(adapted[0] - base[0]).max() > 0.05
  merged = lora.merge({**params, "lora": trained}, alpha=8.0)
  assert "lora" not in merged
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  for got, want in zip(_embeddings(merged), adapted):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_targets_cover_attention_and_mlp_projections_of_both_towers():
  inputs = _inputs()
  params = MODEL.init(jax.random.key(0), *inputs)["params"]
  adapters = lora.init(MODEL, params, inputs, lora.DEFAULT_TARGETS, 3, jax.random.key(1))
  names = [n for n, _ in pytree.named_leaves(adapters)]
  block = "img/Transformer/encoderblock_1/MultiHeadDotProductAttention_0"
  assert f"{block}/out/a" in names and f"txt/Encoder_0/encoderblock_0/MlpBlock_0/Dense_1/b" in names
  assert not any("/head/" in n or "embedding" in n for n in names)
  # The attention output projection contracts (heads, head_dim): A is [heads * head_dim, r].
  out = dict(pytree.named_leaves(adapters))
  assert out[f"{block}/out/a"].shape == (32, 3) and out[f"{block}/out/b"].shape == (3, 32)
  assert out[f"{block}/query/b"].shape == (3, 32)  # Output (heads, head_dim) flattened.
  assert lora.count({"lora": adapters}) == sum(x.size for _, x in out.items())
  only_text = lora.init(MODEL, params, inputs, (r"txt/.*/kernel",), 2, jax.random.key(1))
  assert set(only_text) == {"txt"}
  with pytest.raises(ValueError, match="match no Dense kernel"):
    lora.init(MODEL, params, inputs, (r"nothing/.*",), 2, jax.random.key(1))
  with pytest.raises(ValueError, match="rank must be >= 1"):
    lora.init(MODEL, params, inputs, lora.DEFAULT_TARGETS, 0, jax.random.key(1))
