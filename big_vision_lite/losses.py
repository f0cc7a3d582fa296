"""Contrastive losses on L2-normalised embeddings, always computed in float32.

`zimg`, `ztxt` are [B, E] for the *global* batch, sharded over the mesh's batch axes. All
variants compute the same loss, exactly, and differ in memory per device (R = B / devices
rows per device; `b` is always the bias):

- `sigmoid`, `softmax`: dense [B, B] logits; under jit XLA all-gathers the embeddings.
  O(B^2) per device.
- `sigmoid_chunked`: each device keeps its images and passes text blocks around the ring
  (`ppermute`), adding one [R, R] block per step; the backward pass walks the ring again
  (custom VJP), with each text block's gradient travelling with it. O(R^2 + R*E) per device,
  flat in the number of devices.
- `softmax_local`: each device computes its own rows (and columns) against all-gathered
  embeddings. O(R * B) per device.

`make_loss(name, mesh)` returns `fn(zimg, ztxt, t, b) -> (loss, metrics)`, metrics being the mean
positive / negative logit and in-batch image->text / text->image accuracy.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P


def _logits(zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array) -> jax.Array:
  zimg, ztxt = zimg.astype(jnp.float32), ztxt.astype(jnp.float32)
  return jnp.dot(zimg, ztxt.T, precision=jax.lax.Precision.HIGHEST) * t + b  # [B, B]


def softmax_loss(zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array = 0.):
  """CLIP: mean of image->text and text->image cross-entropy with the matching pair as target.

  `b` is ignored: a bias shared by all pairs cancels in the softmax.
  """
  del b
  logits = _logits(zimg, ztxt, t, 0.)
  logp_i2t = jax.nn.log_softmax(logits, axis=1)
  logp_t2i = jax.nn.log_softmax(logits, axis=0)
  loss = -0.5 * (jnp.mean(jnp.diag(logp_i2t)) + jnp.mean(jnp.diag(logp_t2i)))
  return loss, logits


def sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array = 0.):
  """SigLIP: -1/|B| * sum_ij log sigmoid(z_ij * (t * <x_i, y_j> + b)), z_ij = 1 iff i == j."""
  logits = _logits(zimg, ztxt, t, b)
  labels = 2. * jnp.eye(logits.shape[0], dtype=jnp.float32) - 1.  # +1 diagonal, -1 elsewhere
  loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / logits.shape[0]
  return loss, logits


DENSE: dict[str, Callable] = {"softmax": softmax_loss, "sigmoid": sigmoid_loss}


def batch_metrics(logits: jax.Array) -> dict[str, jax.Array]:
  """Mean positive/negative logits and in-batch retrieval accuracy from [B, B] logits."""
  n = logits.shape[0]
  eye = jnp.eye(n, dtype=bool)
  ids = jnp.arange(n)
  return {
      "pos_logit": jnp.mean(jnp.diag(logits)),
      "neg_logit": jnp.sum(jnp.where(eye, 0., logits)) / max(n * (n - 1), 1),
      "img2txt_acc": jnp.mean(jnp.argmax(logits, axis=1) == ids),
      "txt2img_acc": jnp.mean(jnp.argmax(logits, axis=0) == ids),
  }


def _varying(x: jax.Array, axes) -> jax.Array:
  """Marks a per-device loop accumulator as varying over the mesh axes (shard_map typing)."""
  return jax.lax.pcast(x, axes, to="varying")


def _ring_perm(n: int) -> list[tuple[int, int]]:
  return [(i, (i + 1) % n) for i in range(n)]


def _sigmoid_ring_fwd(zimg, ztxt, t, b, *, axes):
  """Per device: local images [R, E] against every text block as it passes around the ring."""
  devices, rows = jax.lax.axis_size(axes), zimg.shape[0]
  eye = jnp.eye(rows, dtype=bool)
  pos_logits = t * jnp.sum(zimg * ztxt, axis=1) + b  # [R]

  def step(k, carry):
    y, y_negmax, loss, neg_sum, row_negmax = carry
    logits = t * jnp.dot(zimg, y.T, precision=jax.lax.Precision.HIGHEST) + b  # [R, R]
    pos = eye & (k == 0)  # The matching pairs sit on the diagonal of the home block only.
    loss = loss - jnp.sum(jax.nn.log_sigmoid(jnp.where(pos, logits, -logits)))
    neg = jnp.where(pos, -jnp.inf, logits)
    neg_sum = neg_sum + jnp.sum(jnp.where(pos, 0., logits))
    row_negmax = jnp.maximum(row_negmax, jnp.max(neg, axis=1))
    y_negmax = jnp.maximum(y_negmax, jnp.max(neg, axis=0))  # Travels with its text block.
    y, y_negmax = jax.lax.ppermute((y, y_negmax), axes, _ring_perm(devices))
    return y, y_negmax, loss, neg_sum, row_negmax

  ninf = _varying(jnp.full((rows,), -jnp.inf, jnp.float32), axes)
  zero = _varying(jnp.zeros((), jnp.float32), axes)
  _, txt_negmax, loss, neg_sum, img_negmax = jax.lax.fori_loop(
      0, devices, step, (ztxt, ninf, zero, zero, ninf))
  total = rows * devices
  metrics = {
      "pos_logit": jax.lax.psum(jnp.sum(pos_logits), axes) / total,
      "neg_logit": jax.lax.psum(neg_sum, axes) / max(total * (total - 1), 1),
      "img2txt_acc": jax.lax.psum(jnp.sum(pos_logits > img_negmax), axes) / total,
      "txt2img_acc": jax.lax.psum(jnp.sum(pos_logits > txt_negmax), axes) / total,
  }
  return jax.lax.psum(loss, axes) / total, metrics


def _sigmoid_ring_bwd(zimg, ztxt, t, b, g, *, axes):
  """Per device: recomputes each block and sends the text gradient around with its block."""
  devices, rows = jax.lax.axis_size(axes), zimg.shape[0]
  eye = jnp.eye(rows, dtype=bool)
  scale = g / (rows * devices)

  def step(k, carry):
    y, dy, dzimg, dt, db = carry
    sims = jnp.dot(zimg, y.T, precision=jax.lax.Precision.HIGHEST)  # [R, R]
    pos = eye & (k == 0)
    dlogits = (jax.nn.sigmoid(t * sims + b) - pos) * scale  # d(-log sigmoid(z*l))/dl
    dzimg = dzimg + t * jnp.dot(dlogits, y, precision=jax.lax.Precision.HIGHEST)
    dy = dy + t * jnp.dot(dlogits.T, zimg, precision=jax.lax.Precision.HIGHEST)
    y, dy = jax.lax.ppermute((y, dy), axes, _ring_perm(devices))
    return y, dy, dzimg, dt + jnp.sum(dlogits * sims), db + jnp.sum(dlogits)

  zero = _varying(jnp.zeros((), jnp.float32), axes)
  _, dztxt, dzimg, dt, db = jax.lax.fori_loop(
      0, devices, step, (ztxt, jnp.zeros_like(ztxt), jnp.zeros_like(zimg), zero, zero))
  return dzimg, dztxt, jax.lax.psum(dt, axes), jax.lax.psum(db, axes)


def make_sigmoid_chunked(mesh: Mesh) -> Callable:
  """The ring sigmoid loss over all of `mesh`'s axes (the batch axes): (loss, metrics)."""
  axes = tuple(mesh.axis_names)
  batch, rep = P(axes), P()
  fwd_map = jax.shard_map(functools.partial(_sigmoid_ring_fwd, axes=axes), mesh=mesh,
                          in_specs=(batch, batch, rep, rep), out_specs=(rep, rep))
  bwd_map = jax.shard_map(functools.partial(_sigmoid_ring_bwd, axes=axes), mesh=mesh,
                          in_specs=(batch, batch, rep, rep, rep),
                          out_specs=(batch, batch, rep, rep))

  @jax.custom_vjp
  def loss_fn(zimg, ztxt, t, b):
    return fwd_map(zimg, ztxt, t, b)

  def fwd(zimg, ztxt, t, b):
    return fwd_map(zimg, ztxt, t, b), (zimg, ztxt, t, b)

  def bwd(res, cotangents):
    g, _ = cotangents  # The metrics are not differentiated.
    return bwd_map(*res, g)

  loss_fn.defvjp(fwd, bwd)

  def call(zimg, ztxt, t, b=0.):
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return loss_fn(f32(zimg), f32(ztxt), f32(t), f32(b))

  return call


def _softmax_local_rows(zimg, ztxt, t, *, axes):
  """Per device: own images against all texts, own texts against all images."""
  rows = zimg.shape[0]
  total = rows * jax.lax.axis_size(axes)
  own = jax.lax.axis_index(axes) * rows + jnp.arange(rows)  # global indices of local rows
  txt_all = jax.lax.all_gather(ztxt, axes, tiled=True)  # [B, E]
  img_all = jax.lax.all_gather(zimg, axes, tiled=True)
  hi = jax.lax.Precision.HIGHEST
  l_i2t = t * jnp.dot(zimg, txt_all.T, precision=hi)  # [R, B]
  l_t2i = t * jnp.dot(ztxt, img_all.T, precision=hi)  # [R, B]
  pos = l_i2t[jnp.arange(rows), own]
  nll = (jnp.sum(jax.nn.logsumexp(l_i2t, axis=1) - pos) +
         jnp.sum(jax.nn.logsumexp(l_t2i, axis=1) - l_t2i[jnp.arange(rows), own]))
  metrics = {
      "pos_logit": jax.lax.psum(jnp.sum(pos), axes) / total,
      "neg_logit": jax.lax.psum(jnp.sum(l_i2t) - jnp.sum(pos), axes) / max(total * (total - 1), 1),
      "img2txt_acc": jax.lax.psum(jnp.sum(jnp.argmax(l_i2t, axis=1) == own), axes) / total,
      "txt2img_acc": jax.lax.psum(jnp.sum(jnp.argmax(l_t2i, axis=1) == own), axes) / total,
  }
  return jax.lax.psum(nll, axes) / (2 * total), jax.lax.stop_gradient(metrics)


def make_softmax_local(mesh: Mesh) -> Callable:
  """CLIP loss from local rows against all-gathered embeddings: (loss, metrics)."""
  axes = tuple(mesh.axis_names)
  batch, rep = P(axes), P()
  fn = jax.shard_map(functools.partial(_softmax_local_rows, axes=axes), mesh=mesh,
                     in_specs=(batch, batch, rep), out_specs=(rep, rep))

  def call(zimg, ztxt, t, b=0.):
    del b  # Softmax is invariant to a shared bias.
    return fn(zimg.astype(jnp.float32), ztxt.astype(jnp.float32), jnp.asarray(t, jnp.float32))

  return call


def _dense(loss: Callable) -> Callable:
  def call(zimg, ztxt, t, b=0.):
    value, logits = loss(zimg, ztxt, t, b)
    return value, batch_metrics(logits)
  return call


NAMES = ("sigmoid", "softmax", "sigmoid_chunked", "softmax_local")


def make_loss(name: str, mesh: Mesh | None = None) -> Callable:
  """`fn(zimg, ztxt, t, b) -> (loss, metrics)` for a loss name; chunked ones need the mesh."""
  if name in DENSE:
    return _dense(DENSE[name])
  if name not in NAMES:
    raise ValueError(f"unknown loss {name!r}; known: {NAMES}")
  if mesh is None:
    raise ValueError(f"loss {name!r} needs the device mesh")
  return make_sigmoid_chunked(mesh) if name == "sigmoid_chunked" else make_softmax_local(mesh)
