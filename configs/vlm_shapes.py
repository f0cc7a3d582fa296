r"""The image tower as a VLM's eye (LLaVA's recipe) on shapes: `configs/vlm_shapes.py:STAGE`.

  # stage 0: the language model on text alone (captions, questions and answers; no image)
  python -m big_vision_lite.train --config configs/vlm_shapes.py:0 --workdir W0 \
      --config.model_init=ENCODER_WORKDIR
  # stage 1: the projection alone, on captions (image tower and LM frozen)
  python -m big_vision_lite.train --config configs/vlm_shapes.py:1 --workdir W1 \
      --config.model_init=W0
  # stage 2: projection and LM, on instructions (image tower frozen)
  python -m big_vision_lite.train --config configs/vlm_shapes.py:2 --workdir W2 \
      --config.model_init=W1

launch/vlm.sh runs the three for one encoder. Every stage starts from the previous stage's
checkpoint (`model_init`), so the image tower loaded in stage 0 (a configs/siglip_shapes.py or
clip_shapes.py run; none: a random tower) reaches stage 2 bit-identical: it is frozen through
`config.frozen` in all three. The model section is siglip_shapes' (the encoder's architecture;
a CLIP run needs --config.model.bias_init=None). See docs/vlm.md.
"""

import os

import ml_collections

from big_vision_lite import config as config_lib

TEXT_LEN = 56  # Two questions and their answers take at most 49 tokens.
_ENCODER = ("img/.*", "txt/.*", "t", "b")  # Frozen in every stage.
STAGES = {
    # conversation, frozen beyond the encoder, steps, evaluations
    "0": dict(conversation="text", frozen=("proj/.*",), steps=400, image=False),
    "1": dict(conversation="caption", frozen=("lm/.*",), steps=300, image=True),
    "2": dict(conversation="instruct", frozen=(), steps=800, image=True),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in STAGES:
    raise config_lib.ConfigError(f"configs/vlm_shapes.py needs the stage: configs/vlm_shapes.py:"
                                 f"STAGE with STAGE one of {list(STAGES)}; got {arg!r}")
  stage = STAGES[arg]
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_shapes.py"))
  c.batch_size = 64
  c.total_steps = stage["steps"]
  c.log_training_steps = 50
  c.ckpt_steps = 1000
  c.keep_ckpts = 1
  c.eval_steps = 100_000          # evaluate at the end only
  c.lr = 1e-3
  c.schedule = dict(warmup_steps=30, decay_type="cosine")
  c.objectives = dict(vlm=dict(
      depth=2, projection="mlp", text_len=TEXT_LEN, image=stage["image"]))
  c.frozen = _ENCODER + stage["frozen"]
  c.input.data = dict(name="shapes", seed=0, conversation=stage["conversation"], turns=2,
                      vlm_len=TEXT_LEN)
  c.evals = dict(vqa=dict(type="vqa", num_examples=128, heldout_examples=64))
  return c
