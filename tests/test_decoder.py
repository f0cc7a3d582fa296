"""The LocCa decoder: chunked cross-entropy against float64 numpy, masks, parameter names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_lite.models import decoder


def _nll64(h, kernel, bias, targets):
  z = h.astype(np.float64) @ kernel.astype(np.float64) + bias
  m = z.max(-1, keepdims=True)
  lse = np.log(np.exp(z - m).sum(-1)) + m[..., 0]
  return lse - np.take_along_axis(z, targets[..., None], -1)[..., 0]


@pytest.mark.parametrize("chunk", [None, 5, 64])
def test_chunked_cross_entropy_equals_float64_reference(chunk):
  rng = np.random.default_rng(0)
  h = rng.normal(size=(3, 7, 16)).astype(np.float32)
  head = {"kernel": rng.normal(size=(16, 50)).astype(np.float32),
          "bias": rng.normal(size=50).astype(np.float32)}
  targets = rng.integers(0, 50, (3, 7)).astype(np.int32)
  weights = rng.uniform(size=(3, 7))
  nll = decoder.cross_entropy(head, h, targets, chunk)
  np.testing.assert_allclose(nll, _nll64(h, head["kernel"], head["bias"], targets), rtol=1e-5)
  # Gradients of a weighted sum w.r.t. h and the kernel, against central differences of the
  # float64 reference along a random direction.
  loss = lambda hd, x: jnp.sum(decoder.cross_entropy(hd, x, targets, chunk) * weights)
  gh, gk = jax.grad(lambda x, k: loss({**head, "kernel": k}, x), argnums=(0, 1))(
      h, head["kernel"])
  for g, which in ((gh, 0), (gk, 1)):
    d = rng.normal(size=g.shape)
    eps = 1e-4
    args = [h.astype(np.float64), head["kernel"].astype(np.float64)]
    plus, minus = list(args), list(args)
    plus[which] = args[which] + eps * d
    minus[which] = args[which] - eps * d
    f = lambda a: np.sum(_nll64(a[0], a[1], head["bias"], targets) * weights)
    np.testing.assert_allclose(np.sum(np.asarray(g, np.float64) * d),
                               (f(plus) - f(minus)) / (2 * eps), rtol=1e-3)


def test_parallel_prediction_sees_later_positions_causal_does_not():
  dec = decoder.Decoder(vocab_size=20, width=16, depth=1, mlp_dim=32, num_heads=2, max_len=6)
  tokens = jnp.array([[3, 4, 5, 6, 7, 8]], jnp.int32)
  image = jnp.ones((1, 4, 8))
  causal = jnp.tril(jnp.ones((6, 6), bool))[None, None]
  full = jnp.ones((1, 1, 6, 6), bool)
  params = dec.init(jax.random.key(0), tokens, image, causal)["params"]
  assert set(params) >= {"Embed_0", "pos_embedding", "image_proj", "DecoderBlock_0",
                         "LayerNorm_out", "head"}
  assert params["Embed_0"]["embedding"].shape == (21, 16)  # + the mask token.
  changed = tokens.at[0, 5].set(9)
  run = jax.jit(lambda t, m: dec.apply({"params": params}, t, image, m))
  np.testing.assert_array_equal(run(tokens, causal)[0, :5], run(changed, causal)[0, :5])
  assert not np.allclose(run(tokens, full)[0, :5], run(changed, full)[0, :5])
