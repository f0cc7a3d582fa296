"""Image-text retrieval recall@k with several captions per image, computed in chunks."""

import numpy as np

from big_vision_lite.data import tokenizer as tok_lib
from big_vision_lite.distributed import gather_rows, gather_strings
from big_vision_lite.evaluators import data
from big_vision_lite.evaluators.base import Evaluator
from big_vision_lite.evaluators.embedder import Embedder
from big_vision_lite.evaluators.ranking import stable_rank


def recall_at_k(zimg: np.ndarray, ztxt: np.ndarray, txt_to_img: np.ndarray,
                ks=(1, 5, 10), chunk: int = 512) -> dict[str, float]:
  """Recall@k from image [N, E] and caption [M, E] embeddings; caption j describes txt_to_img[j].

  img2txt: an image is a hit if any of its captions ranks in the top k of all M captions.
  txt2img: a caption is a hit if its image ranks in the top k of all N images.
  Ties are broken by index, as a stable sort would: of two equal scores the lower-indexed
  candidate ranks first (a collapsed model, all scores equal, scores at chance, not 1).
  Working memory: a few chunk x max(N, M) arrays.
  """
  n, m = len(zimg), len(ztxt)
  by_image = np.argsort(txt_to_img, kind="stable")  # Caption indices grouped by image.
  bounds = np.searchsorted(txt_to_img[by_image], np.arange(n + 1))
  if np.any(np.diff(bounds) == 0):
    raise ValueError(f"image {int(np.argmax(np.diff(bounds) == 0))} has no caption")
  img_rank = np.empty(n, np.int64)
  for s in range(0, n, chunk):
    e = min(s + chunk, n)
    sim = zimg[s:e] @ ztxt.T  # [c, M]
    caps = by_image[bounds[s]:bounds[e]]  # This chunk's own captions, grouped by image.
    owners = txt_to_img[caps]
    order = np.lexsort((caps, -sim[owners - s, caps], owners))  # Best own caption first.
    first = np.r_[True, owners[order][1:] != owners[order][:-1]]
    img_rank[s:e] = stable_rank(sim, caps[order][first])
  txt_rank = np.empty(m, np.int64)
  for s in range(0, m, chunk):
    sim = ztxt[s:s + chunk] @ zimg.T  # [c, N]
    txt_rank[s:s + chunk] = stable_rank(sim, txt_to_img[s:s + chunk])
  out = {}
  for k in ks:
    out[f"img2txt_r@{k}"] = float(np.mean(img_rank < k))
    out[f"txt2img_r@{k}"] = float(np.mean(txt_rank < k))
  return out


class Retrieval(Evaluator):
  """Recall@1/5/10 both ways over a captioned set ('shapes': every phrasing of each test
  image; or a tfds dataset with `caption_key`, e.g. coco_captions 'captions/text')."""

  kind = "retrieval"
  benchmark_task = "zeroshot_retrieval"

  def __init__(self, embedder: Embedder, *, dataset: str = "shapes", split: str | None = None,
               num_examples: int | None = None, seed: int = 0, image_size: int = 64,
               pp: str | None = None, data_dir: str | None = None, image_key: str = "image",
               caption_key: str = "captions/text", max_len: int = 16,
               tokenizer: str = tok_lib.SHAPES_MODEL):
    self.embedder, self.dataset = embedder, dataset
    self.eval_set = data.load(dataset, split=split, kind="captions", image_size=image_size,
                              pp=pp, seed=seed, num_examples=num_examples, data_dir=data_dir,
                              image_key=image_key, caption_key=caption_key)
    per_image = self.eval_set.captions
    self.captions = [c for caps in per_image for c in caps]
    self.owner = np.array([self.eval_set.offset + i for i, caps in enumerate(per_image)
                           for _ in caps], np.int64)
    self.tokens = tok_lib.get(tokenizer).encode(self.captions, max_len)

  def embed(self, params) -> dict[str, np.ndarray]:
    """Image [N, E] and caption [M, E] embeddings, caption -> image index [M], captions [M]."""
    return {"image_embeddings": self.embedder.images(params, self.eval_set.images),
            "text_embeddings": self.embedder.texts(params, self.tokens),
            "caption_image": gather_rows(self.owner),
            "captions": np.array(gather_strings(self.captions))}

  def metrics(self, emb: dict[str, np.ndarray]) -> dict[str, float]:
    r = recall_at_k(emb["image_embeddings"], emb["text_embeddings"], emb["caption_image"])
    return {f"retrieval/{self.dataset}/{k}": v for k, v in r.items()}

  def benchmark_name(self, metric: str) -> str | None:
    """Image retrieval is text -> image: `image_retrieval_recall@k`; the other way round
    `text_retrieval_recall@k`."""
    direction, at = metric.split("_r@")
    return f"{'image' if direction == 'txt2img' else 'text'}_retrieval_recall@{at}"
