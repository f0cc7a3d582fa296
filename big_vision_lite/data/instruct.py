"""Instruction data for a vision-language model: conversations of (question, answer) turns.

On shapes, questions and answers come from each image's objects, as LLaVA made its data from
COCO's annotations: six question types (QUESTION_TYPES), several phrasings each. Training images
are `train` images, whose held-out colour-shape pairs never appear (shapes.HELDOUT_COMBOS); the
vqa evaluator asks about `validation` images and about images of the held-out pairs.

A conversation becomes two arrays of one length (`encode`): `vlm_text` int32, the turns'
token ids (each question then EOS, each answer then EOS; 0-padded), and `vlm_mask` float32, 1
on the tokens the loss predicts (answers and their EOS; every token with `all_tokens`).
"""

import re

import numpy as np

from big_vision_lite.data import shapes
from big_vision_lite.data import tokenizer as tok_lib

QUESTION_TYPES = ("color", "shape", "size", "position", "count", "relation")
CONVERSATIONS = ("instruct", "caption", "text")  # shapes input data.conversation
_PHRASINGS = {
    "color": ("what colour is the {ref}", "what is the colour of the {ref}",
              "which colour does the {ref} have"),
    "shape": ("what shape is at the {p}", "which shape is at the {p}",
              "what kind of shape is at the {p}"),
    "size": ("is the {ref} small or large", "how big is the {ref}", "is the {ref} large or small"),
    "position": ("where is the {ref}", "in which part of the image is the {ref}",
                 "where can you see the {ref}"),
    "count": ("how many shapes are there", "how many objects are in the image",
              "count the shapes"),
    "relation": ("is the {ref} {rel} the {ref2}", "is it true that the {ref} is {rel} the {ref2}",
                 "would you say the {ref} is {rel} the {ref2}"),
}
CAPTION_PROMPTS = ("describe the image", "what is in the image", "write a caption for the image",
                   "what do you see")
_RELATIONS = ("to the left of", "to the right of", "above", "below")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


class ConversationError(ValueError):
  """A conversation that cannot be trained on (empty answer, longer than the context)."""


def _holds(relation: str, cell: int, cell2: int) -> bool:
  (r1, c1), (r2, c2) = divmod(cell, 3), divmod(cell2, 3)
  return {"to the left of": c1 < c2, "to the right of": c1 > c2, "above": r1 < r2,
          "below": r1 > r2}[relation]


def _names(obj: dict) -> tuple[str, str, str, str]:
  return (shapes.SHAPES[obj["shape"]], shapes.COLOR_NAMES[obj["color"]],
          shapes.SIZE_NAMES[obj["size"]], shapes.POSITIONS[obj["position"]])


def _reference(objects: list[dict], k: int) -> str | None:
  """The shortest of 'star', 'red star', 'small red star' that names object k alone."""
  s, c, z, _ = _names(objects[k])
  for words in ((s,), (c, s), (z, c, s)):
    same = [o for o in objects if tuple(_names(o)[i] for i in (2, 1, 0)[-len(words):]) == words]
    if len(same) == 1:
      return " ".join(words)
  return None


def questions(example: dict, rng: np.random.Generator) -> list[tuple[str, str, str]]:
  """[(question type, question, answer)] for a shapes example (shapes.draw's dict): one question
  of each type that applies (relation: two objects), about a random object, in a random
  phrasing."""
  objects = example["objects"]
  out = []
  for qtype in QUESTION_TYPES:
    if qtype == "relation" and len(objects) < 2:
      continue
    k = int(rng.integers(len(objects)))
    ref = _reference(objects, k)
    if ref is None and qtype in ("color", "size", "position", "relation"):
      continue
    s, c, z, p = _names(objects[k])
    fields = dict(ref=ref, p=p)
    answer = {"color": c, "shape": s, "size": z, "position": p,
              "count": _NUMBERS[len(objects)]}.get(qtype)
    if qtype == "relation":
      other = 1 - k
      ref2 = _reference(objects, other)
      if ref2 is None:
        continue
      truth = bool(rng.integers(2))  # Half of the questions hold.
      rels = [r for r in _RELATIONS if _holds(r, objects[k]["position"],
                                              objects[other]["position"]) == truth]
      fields.update(ref2=ref2, rel=rels[int(rng.integers(len(rels)))])
      answer = "yes" if truth else "no"
    phrasing = _PHRASINGS[qtype][int(rng.integers(len(_PHRASINGS[qtype])))]
    out.append((qtype, shapes.with_articles(phrasing.format(**fields)), answer))
  return out


def shapes_conversation(example: dict, kind: str, turns: int,
                        rng: np.random.Generator) -> list[tuple[str, str]]:
  """The (question, answer) turns one shapes training example gives for a stage: `instruct`
  (up to `turns` questions of distinct types), `caption` (a caption prompt -> its caption), or
  `text` (what the LM reads without images: half of the time the caption as an answer to the
  empty question '', else the questions and answers; trained on every token)."""
  if kind not in CONVERSATIONS:
    raise ValueError(f"unknown conversation {kind!r}; known: {list(CONVERSATIONS)}")
  if kind == "caption":
    return [(CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))], example["caption"])]
  qas = questions(example, rng)
  picked = [qas[i] for i in rng.permutation(len(qas))[:turns]]
  if kind == "text" and rng.random() < 0.5:
    return [("", example["caption"])]
  return [(q, a) for _, q, a in picked]


def _ids(tokenizer: tok_lib.Tokenizer, text: str) -> list[int]:
  """Token ids of `text` without padding or EOS."""
  row = tokenizer.encode([text], 4 * len(text) + 8)[0]
  return [int(t) for t in row if t not in (tok_lib.PAD_ID, tok_lib.EOS_ID)]


def encode(tokenizer: tok_lib.Tokenizer, turns: list[tuple[str, str]], length: int,
           all_tokens: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(vlm_text int32 [length], vlm_mask float32 [length]) of a conversation: each turn is its
  question's ids and EOS (none when the question is ''), then its answer's ids and EOS; the
  mask is 1 on the answers and their EOS (on every token with `all_tokens`). An empty answer or
  a conversation longer than `length` tokens raises ConversationError."""
  ids: list[int] = []
  mask: list[float] = []
  for question, answer in turns:
    a = _ids(tokenizer, answer)
    if not a:
      raise ConversationError(f"empty answer to {question!r}: every turn needs an answer with "
                              "at least one token (drop the turn or fix the data)")
    q = _ids(tokenizer, question) + [tok_lib.EOS_ID] if question else []
    ids += q + a + [tok_lib.EOS_ID]
    mask += [float(all_tokens)] * len(q) + [1.0] * (len(a) + 1)
  if len(ids) > length:
    raise ConversationError(
        f"conversation of {len(ids)} tokens is longer than the language model's text context "
        f"of {length} (objectives.vlm.text_len and the input's vlm_len): raise both, or use "
        "fewer/shorter turns")
  text, weights = np.zeros(length, np.int32), np.zeros(length, np.float32)
  text[:len(ids)], weights[:len(mask)] = ids, mask
  return text, weights


def prompt(tokenizer: tok_lib.Tokenizer, question: str) -> list[int]:
  """The ids a model is given to answer `question`: its ids and EOS (as `encode` writes a
  turn's question)."""
  return _ids(tokenizer, question) + [tok_lib.EOS_ID]


def normalize(answer: str) -> str:
  """Lower case, punctuation and articles dropped, digits as words, spaces collapsed: the form
  in which answers are compared."""
  words = re.sub(r"[^a-z0-9 ]", " ", answer.lower()).split()
  words = [_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in words]
  return " ".join(w for w in words if w not in ("a", "an", "the"))
