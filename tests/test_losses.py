"""Losses and their gradients against naive float64 references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_lite import losses


def _embeddings(n=6, e=5, seed=0):
  rng = np.random.default_rng(seed)
  x, y = rng.normal(size=(n, e)), rng.normal(size=(n, e))
  return (x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True))


def naive_sigmoid(x, y, t, b):
  """The SigLIP paper's definition, pair by pair in float64."""
  n = len(x)
  total = 0.0
  for i, j in itertools.product(range(n), range(n)):
    z = 1.0 if i == j else -1.0
    logit = t * float(np.dot(x[i], y[j])) + b
    total += np.log(1.0 / (1.0 + np.exp(-z * logit)))
  return -total / n


def naive_softmax(x, y, t):
  """CLIP: mean of the two directions' cross-entropy, row by row in float64."""
  n = len(x)
  logits = [[t * float(np.dot(x[i], y[j])) for j in range(n)] for i in range(n)]
  i2t = sum(-logits[i][i] + np.log(sum(np.exp(logits[i][j]) for j in range(n))) for i in range(n))
  t2i = sum(-logits[j][j] + np.log(sum(np.exp(logits[i][j]) for i in range(n))) for j in range(n))
  return 0.5 * (i2t + t2i) / n


def numeric_grad(f, args, eps=1e-6):
  """Central differences of scalar f w.r.t. each array/scalar argument, float64."""
  grads = []
  for k, a in enumerate(args):
    a = np.array(a, np.float64)
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
      plus, minus = a.copy(), a.copy()
      plus[idx] += eps
      minus[idx] -= eps
      g[idx] = (f(*args[:k], plus, *args[k + 1:]) - f(*args[:k], minus, *args[k + 1:])) / (2 * eps)
    grads.append(g)
  return grads


@pytest.mark.parametrize("t,b", [(10.0, -10.0), (1.0, 0.0), (3.5, -2.0)])
def test_sigmoid_value_and_grad_match_float64_reference(t, b):
  x, y = _embeddings()
  loss, _ = losses.sigmoid_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), t, b)
  np.testing.assert_allclose(float(loss), naive_sigmoid(x, y, t, b), rtol=1e-5)
  grads = jax.grad(lambda *a: losses.sigmoid_loss(*a)[0], argnums=(0, 1, 2, 3))(
      jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.float32(t), jnp.float32(b))
  ref = numeric_grad(naive_sigmoid, [x, y, np.float64(t), np.float64(b)])
  for g, r in zip(grads, ref):
    np.testing.assert_allclose(np.asarray(g), r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("t", [1.0, 10.0, 30.0])
def test_softmax_value_and_grad_match_float64_reference(t):
  x, y = _embeddings(seed=1)
  loss, _ = losses.softmax_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), t)
  np.testing.assert_allclose(float(loss), naive_softmax(x, y, t), rtol=1e-5)
  grads = jax.grad(lambda *a: losses.softmax_loss(*a)[0], argnums=(0, 1, 2))(
      jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.float32(t))
  ref = numeric_grad(lambda a, b_, c: naive_softmax(a, b_, c), [x, y, np.float64(t)])
  for g, r in zip(grads, ref):
    np.testing.assert_allclose(np.asarray(g), r, rtol=1e-4, atol=1e-5)


def test_sigmoid_paper_formula_known_value():
  # Two orthogonal pairs, t=1, b=0: positives have logit 1, negatives logit 0.
  x = jnp.eye(2)
  loss, logits = losses.sigmoid_loss(x, x, 1.0, 0.0)
  expected = -(2 * np.log(1 / (1 + np.exp(-1.0))) + 2 * np.log(0.5)) / 2
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(logits), np.eye(2))


def test_losses_compute_in_float32_from_bfloat16_inputs():
  x, y = _embeddings()
  loss, logits = losses.sigmoid_loss(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16),
                                     10.0, -10.0)
  assert loss.dtype == jnp.float32 and logits.dtype == jnp.float32
  np.testing.assert_allclose(float(loss), naive_sigmoid(x, y, 10.0, -10.0), rtol=2e-2)


def test_batch_metrics_on_known_logits():
  logits = jnp.array([[5., 1., 0.], [2., 1., 3.], [0., 0., 4.]])
  m = losses.batch_metrics(logits)
  np.testing.assert_allclose(float(m["pos_logit"]), 10 / 3)
  np.testing.assert_allclose(float(m["neg_logit"]), (1 + 0 + 2 + 3 + 0 + 0) / 6)
  np.testing.assert_allclose(float(m["img2txt_acc"]), 2 / 3)  # row 1 picks column 2
  np.testing.assert_allclose(float(m["txt2img_acc"]), 2 / 3)  # column 1 picks row 0 or 1 (tie -> 0)


# --- Distributed variants against the dense losses, on 8 simulated devices.

from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from big_vision_lite import sharding  # noqa: E402


def _sharded_embeddings(mesh, n=32, e=8, seed=3):
  x, y = _embeddings(n, e, seed)
  spec = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  return (jax.device_put(jnp.asarray(x, jnp.float32), spec),
          jax.device_put(jnp.asarray(y, jnp.float32), spec))


@pytest.mark.parametrize("axes", [(("data", -1),), (("data", 4), ("fsdp", 2))])
@pytest.mark.parametrize("name,dense", [("sigmoid_chunked", "sigmoid"),
                                        ("softmax_local", "softmax")])
def test_distributed_loss_equals_dense_in_value_gradient_and_metrics(axes, name, dense):
  mesh = sharding.make_mesh(axes)
  x, y = _sharded_embeddings(mesh)
  t, b = jnp.float32(7.0), jnp.float32(-3.0)
  ref_fn, fn = losses.make_loss(dense, mesh), losses.make_loss(name, mesh)

  def value_and_grads(f):
    g = jax.jit(jax.value_and_grad(lambda *a: f(*a)[0], argnums=(0, 1, 2, 3)))
    return g(x, y, t, b)

  (ref, ref_grads), (val, grads) = value_and_grads(ref_fn), value_and_grads(fn)
  np.testing.assert_allclose(float(val), float(ref), rtol=1e-5)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)
  ref_m, m = jax.jit(ref_fn)(x, y, t, b)[1], jax.jit(fn)(x, y, t, b)[1]
  for k in ref_m:
    np.testing.assert_allclose(float(m[k]), float(ref_m[k]), rtol=1e-5, atol=1e-6, err_msg=k)


def test_chunked_sigmoid_matches_float64_reference():
  mesh = sharding.make_mesh()
  x, y = _sharded_embeddings(mesh, n=16, e=5, seed=4)
  loss, _ = jax.jit(losses.make_loss("sigmoid_chunked", mesh))(x, y, 10.0, -10.0)
  np.testing.assert_allclose(float(loss), naive_sigmoid(np.asarray(x, np.float64),
                                                        np.asarray(y, np.float64), 10.0, -10.0),
                             rtol=1e-5)


def test_unknown_loss_lists_known():
  with pytest.raises(ValueError, match="unknown loss 'hinge'.*sigmoid_chunked"):
    losses.make_loss("hinge")
