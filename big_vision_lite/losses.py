"""Contrastive losses on L2-normalised embeddings, always computed in float32.

`zimg`, `ztxt` are [B, E] for the *global* batch: under `jax.jit` with the batch sharded over
the mesh, XLA inserts the all-gather, so the dense losses are exact across devices.
"""

from typing import Callable

import jax
import jax.numpy as jnp


def _logits(zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array) -> jax.Array:
  zimg, ztxt = zimg.astype(jnp.float32), ztxt.astype(jnp.float32)
  return jnp.dot(zimg, ztxt.T, precision=jax.lax.Precision.HIGHEST) * t + b  # [B, B]


def softmax_loss(zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array = 0.):
  """CLIP: mean of image->text and text->image cross-entropy with the matching pair as target."""
  logits = _logits(zimg, ztxt, t, b)
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


LOSSES: dict[str, Callable] = {"softmax": softmax_loss, "sigmoid": sigmoid_loss}


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
