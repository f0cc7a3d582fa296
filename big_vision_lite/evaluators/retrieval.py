"""Image-text retrieval recall@k with several captions per image, computed in chunks."""

import numpy as np

from big_vision_lite.data import shapes
from big_vision_lite.data import tokenizer as tok_lib


def recall_at_k(zimg: np.ndarray, ztxt: np.ndarray, txt_to_img: np.ndarray,
                ks=(1, 5, 10), chunk: int = 1024) -> dict[str, float]:
  """Recall@k from image [N, E] and caption [M, E] embeddings; caption j describes txt_to_img[j].

  img2txt: an image is a hit if any of its captions ranks in the top k of all M captions.
  txt2img: a caption is a hit if its image ranks in the top k of all N images.
  Ties count against the query (a strictly higher score outranks).
  """
  n, m = len(zimg), len(ztxt)
  img_rank = np.empty(n, np.int64)
  for s in range(0, n, chunk):
    sim = zimg[s:s + chunk] @ ztxt.T  # [c, M]
    own = txt_to_img[None, :] == np.arange(s, min(s + chunk, n))[:, None]
    best_own = np.where(own, sim, -np.inf).max(axis=1)
    img_rank[s:s + chunk] = np.sum(sim > best_own[:, None], axis=1)
  txt_rank = np.empty(m, np.int64)
  for s in range(0, m, chunk):
    sim = ztxt[s:s + chunk] @ zimg.T  # [c, N]
    own = sim[np.arange(len(sim)), txt_to_img[s:s + chunk]]
    txt_rank[s:s + chunk] = np.sum(sim > own[:, None], axis=1)
  out = {}
  for k in ks:
    out[f"img2txt_r@{k}"] = float(np.mean(img_rank < k))
    out[f"txt2img_r@{k}"] = float(np.mean(txt_rank < k))
  return out


def shapes_captions(seed: int, num_examples: int, image_size: int):
  """Test images uint8 [N, H, W, 3], all their captions [M], and caption -> image index [M]."""
  examples = [shapes.draw(seed, "test", i, image_size) for i in range(num_examples)]
  captions = [c for e in examples for c in e["captions"]]
  owner = np.array([i for i, e in enumerate(examples) for _ in e["captions"]])
  return np.stack([e["image"] for e in examples]), captions, owner


class Retrieval:
  """Recall@1/5/10 both ways on the shapes test split (every phrasing of every image)."""

  def __init__(self, embedder, *, dataset: str = "shapes", num_examples: int = 512, seed: int = 0,
               image_size: int = 64, max_len: int = 16, tokenizer: str = tok_lib.SHAPES_MODEL):
    if dataset != "shapes":
      raise ValueError(f"unknown retrieval dataset {dataset!r}; known: ['shapes']")
    self.embedder, self.dataset = embedder, dataset
    self.images, captions, self.owner = shapes_captions(seed, num_examples, image_size)
    self.tokens = tok_lib.get(tokenizer).encode(captions, max_len)

  def run(self, params) -> dict[str, float]:
    zimg = self.embedder.images(params, self.images)
    ztxt = self.embedder.texts(params, self.tokens)
    return {f"retrieval/{self.dataset}/{k}": v
            for k, v in recall_at_k(zimg, ztxt, self.owner).items()}
