"""The classification term: softmax cross-entropy of a linear head on the image tower's
L2-normalised embedding (fine-tuning a pretrained model to a labelled task)."""

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_lite import schema
from big_vision_lite.objectives import BatchKey, Term
from big_vision_lite.schema import ConfigError

HEAD = "classifier"  # The linear head's parameters (TwoTowers with `classes`).
HEAD_INITS = ("zeros", "zeroshot")


class Classify(Term):
  """Cross-entropy of the head's logits against `label`; metric: `accuracy`. The model is the
  image tower and the head (no text tower, no t or b)."""

  name = "classify"
  OPTIONS = dict(
      dataset=schema.Str(None, "the classes: a shapes task (`shapes_position`, ...) or a tfds "
                         "dataset whose label feature names them", nullable=True),
      split=schema.Str("train", "(tfds) the split whose label feature is read for the names"),
      data_dir=schema.Str(None, "(tfds) its data_dir", nullable=True),
      label_key=schema.Str("label", "(tfds) the class label feature"),
      classnames=schema.Seq(schema.Str(), None, "class names (default: the dataset's)",
                            nullable=True),
      head_init=schema.Str("zeros", "the head starts at zero, or as the zero-shot classifier of "
                           "the class names (t x their mean prompt embeddings; needs "
                           "model_init)", choices=HEAD_INITS),
      templates=schema.Anything("clip", "prompts for head_init='zeroshot': 'clip', 'single' or "
                                "a list of strings with one '{}'"),
  )

  def __init__(self, config, settings, mesh=None):
    super().__init__(config, settings, mesh)
    if not settings["dataset"]:
      raise ConfigError("objectives.classify needs dataset (the classes: a shapes task such as "
                        "'shapes_position', or a tfds dataset name)")
    self.batch_keys = {"label": BatchKey(
        (), jnp.int32, "class labels", "the data: objectives.classify needs a 'label' per "
        "image (input.data.task for shapes, a tfds label feature)")}

  @classmethod
  def model_options(cls, config, settings):
    return {"classes": len(class_names(settings))}

  def loss(self, params, batch, outputs):
    del params
    logits = outputs["logits"].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits)
    loss = -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, axis=1) == batch["label"])}

  def init_from(self, config, loaded, fresh, mesh=None):
    """The checkpoint is a two-tower model: its image tower is kept, and the head is `fresh`'s
    or, with head_init='zeroshot', its zero-shot classifier of the class names."""
    head = (zeroshot_head(config, self.settings, loaded, mesh)
            if self.settings["head_init"] == "zeroshot" else fresh[HEAD])
    return {"img": loaded["img"], HEAD: head}


def class_names(settings) -> list[str]:
  """The class names (settings.classnames, else the dataset's)."""
  from big_vision_lite.evaluators import data as eval_data  # pylint: disable=import-outside-toplevel
  if settings["classnames"]:
    return list(settings["classnames"])
  return eval_data.classnames(settings["dataset"], settings["split"], settings["data_dir"],
                              settings["label_key"])


def zeroshot_head(config, settings, params, mesh=None) -> dict:
  """A classifier head {kernel [E, C], bias [C]} computing t x the cosine similarity with each
  class's zero-shot classifier (its prompts' mean embedding, as the zeroshot evaluator builds
  it) from the two-tower `params`: fine-tuning starts at zero-shot accuracy."""
  # pylint: disable=import-outside-toplevel
  from big_vision_lite import job
  from big_vision_lite import sharding as sharding_lib
  from big_vision_lite.evaluators import prompts, zeroshot
  from big_vision_lite.evaluators.embedder import Embedder
  from big_vision_lite.models.two_towers import TwoTowers
  names = class_names(settings)
  templates = prompts.templates_for(settings["dataset"], settings["templates"])
  _, tokens = zeroshot.prompt_tokens(settings["dataset"], names, templates, False,
                                     job.tokenizer_spec(config), config.model.text.max_len)
  model = TwoTowers(**config.model.to_dict())
  mesh = mesh or sharding_lib.make_mesh()
  embedder = Embedder(lambda p, i, t: model.apply({"params": p}, i, t), mesh,
                      config.eval_batch_size)
  weights_ = zeroshot.class_embeddings(embedder, params, tokens, len(names))  # [C, E]
  t = float(np.exp(np.asarray(params["t"]).reshape(-1)[0]))
  return {"kernel": (t * weights_).T.astype(np.float32),
          "bias": np.zeros(len(names), np.float32)}
