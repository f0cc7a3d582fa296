"""The contrastive term: SigLIP's sigmoid or CLIP's softmax loss of the two towers' embeddings
(`config.loss` names which, and its distributed form)."""

import jax.numpy as jnp

from big_vision_lite import losses
from big_vision_lite.objectives import BatchKey, Term


class Contrastive(Term):
  """The loss of `config.loss` over the global batch's image and text embeddings; metrics: the
  loss's own, `t` and `b`. Couples the batch: accumulation takes it over the whole batch."""

  name = "contrastive"
  towers = ("image", "text")
  coupled = True

  def __init__(self, config, settings, mesh=None):
    super().__init__(config, settings, mesh)
    self.loss_name = config.loss
    self.mesh = mesh
    self.batch_keys = {"labels": BatchKey(
        (config.model.text.max_len,), jnp.int32, "token ids",
        "tokenize(max_len=...) in config.input.pp or model.text.max_len")}
    self._fn = None

  def features(self, params, batch, outputs):
    del params, batch
    return {"zimg": outputs["zimg"], "ztxt": outputs["ztxt"], "t": outputs["t"],
            "b": outputs["b"]}

  def loss_of_features(self, features):
    if self._fn is None:  # Built at first use: the chunked losses need the mesh.
      self._fn = losses.make_loss(self.loss_name, self.mesh)
    f = features
    loss, measured = self._fn(f["zimg"], f["ztxt"], f["t"], f["b"])
    return loss, {**measured, "t": f["t"], "b": f["b"]}

