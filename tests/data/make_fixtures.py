"""Writes the interop fixtures in tests/data/ by running the reference implementations.

Each sub-command runs in its own throwaway environment with the reference code importable
(tests/data/README.md gives the exact setup and package versions):

  python tests/data/make_fixtures.py bigvision   # big_vision on PYTHONPATH (+ a tensorflow stub)
  python tests/data/make_fixtures.py openclip    # open-clip-torch and torch installed
  python tests/data/make_fixtures.py ours        # this package: the exports transformers checks
  python tests/data/make_fixtures.py hf          # transformers, open-clip-torch and timm
  python tests/data/make_fixtures.py naflex      # big_vision's naflex_vit.py, as bigvision

Neither the tests nor the package import this script or the reference code: the fixtures are
the reference outputs, committed. Every parameter of every model is perturbed with noise after
init (LayerNorm scales and biases, all biases, position embeddings, t and b), so a loader that
drops or misplaces any parameter changes the outputs.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NOISE = 0.1  # std of the Gaussian noise added to every parameter after init
BATCH = 4

# big_vision: proj.image_text.two_towers with a ViT image tower (MAP head, learned posemb) and
# its text transformer ("last" pooling). Explicit sizes keep it tiny.
BV_VOCAB, BV_MAX_LEN = 128, 8
BV_MODEL = dict(
    image_model="vit",
    text_model="proj.image_text.text_transformer",
    image=dict(patch_size=(8, 8), width=32, depth=2, mlp_dim=64, num_heads=2,
               pool_type="map", posemb="learn"),
    text=dict(vocab_size=BV_VOCAB, width=32, depth=2, mlp_dim=64, num_heads=2),
    out_dim=24,
    temperature_init=10.0,
    bias_init=-10.0,
)
BV_IMAGE_SIZE, BV_RESAMPLED_SIZE = 32, 48


def _images(rng: np.random.Generator, size: int) -> np.ndarray:
  """Smooth-ish random images in [-1, 1] so that every patch differs: float32 [B, size, size, 3]."""
  x = rng.uniform(-1, 1, (BATCH, size, size, 3))
  ramp = np.linspace(-1, 1, size)
  x = 0.6 * x + 0.4 * ramp[None, :, None, None] * ramp[None, None, :, None]
  return np.clip(x, -1, 1).astype(np.float32)


def _bv_texts(rng: np.random.Generator) -> np.ndarray:
  """Token ids as big_vision's SigLIP tokenization gives them: some rows full, some 0-padded."""
  ids = rng.integers(2, BV_VOCAB, (BATCH, BV_MAX_LEN)).astype(np.int32)
  for row, length in enumerate([BV_MAX_LEN, 5, 3, BV_MAX_LEN - 1]):
    ids[row, length:] = 0
  return ids


def _check_sensitive(run, params: dict, init: dict, exempt=lambda name: False) -> None:
  """Asserts that putting back any one parameter's unperturbed init value changes the outputs.

  `params` and `init` map flat names to arrays; `run(flat params) -> dict of arrays`. `exempt`
  names the parameters that cannot matter (an attention key bias adds the same amount to every
  logit of a query, so softmax cancels it).
  """
  ref = run(params)
  smallest = (np.inf, "")
  for name in params:
    if exempt(name) or np.issubdtype(params[name].dtype, np.integer):
      continue
    changed = run({**params, name: init[name]})
    diff = max(float(np.max(np.abs(changed[k] - ref[k]))) for k in ref)
    # Far above float32 round-off, so a comparison at atol 1e-5 catches any one of them.
    assert diff > 1e-4, f"outputs do not depend on {name} (max change {diff:.2e})"
    smallest = min(smallest, (diff, name))
  print(f"  every parameter matters; the smallest change, {smallest[0]:.1e}, is from {smallest[1]}")


def _bigvision() -> None:
  """Fixtures 1-3: two_towers SigLIP checkpoints (.npz), scanned layout, posemb resampling."""
  import jax
  import ml_collections
  from big_vision import utils
  from big_vision.models import vit
  from big_vision.models.proj.image_text import two_towers

  def perturb(params, seed):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([np.asarray(x + NOISE * jax.random.normal(k, x.shape, x.dtype))
                              for x, k in zip(leaves, keys)])

  def save_npz(path, tree):
    # How big_vision writes .npz checkpoints: flat '/'-joined names of the pytree's leaves.
    names_and_vals, _ = utils.tree_flatten_with_names(tree)
    np.savez(path, **{k: np.asarray(v) for k, v in names_and_vals})
    print(f"wrote {path}: {len(names_and_vals)} arrays, {os.path.getsize(path)} bytes")

  def run(model, params, images, texts):
    zimg, ztxt, out = model.apply({"params": params}, images, texts)
    return dict(img_emb=np.asarray(zimg), txt_emb=np.asarray(ztxt), t=np.asarray(out["t"]),
                t_param=np.asarray(out["t/parameter"]), b=np.asarray(out["b"]))

  def save_io(path, cfg, images, texts, outputs, **extra):
    np.savez(path, config=np.array(json.dumps(cfg, sort_keys=True)), images=images,
             texts=texts, **outputs, **extra)
    print(f"wrote {path}: {os.path.getsize(path)} bytes")

  rng = np.random.default_rng(0)
  images = _images(rng, BV_IMAGE_SIZE)
  texts = _bv_texts(rng)
  images_hi = _images(rng, BV_RESAMPLED_SIZE)

  # 1. Unscanned towers; the same parameters saved with and without the 'params/' prefix.
  cfg = json.loads(json.dumps(BV_MODEL))  # tuples -> lists, as the JSON in the fixture holds
  model = two_towers.Model(**BV_MODEL)
  init = jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(1), images, texts)["params"])
  params = perturb(init, seed=2)
  outputs = run(model, params, images, texts)
  flat = lambda tree: dict(utils.tree_flatten_with_names(tree)[0])
  _check_sensitive(lambda p: run(model, utils.recover_tree(*zip(*p.items())), images, texts),
                   flat(params), flat(init), exempt=lambda name: name.endswith("key/bias"))
  ckpt = os.path.join(HERE, "bv_siglip.npz")
  save_npz(ckpt, {"params": params})
  save_npz(os.path.join(HERE, "bv_siglip_bare.npz"), params)
  save_io(os.path.join(HERE, "bv_siglip_io.npz"), cfg, images, texts, outputs)

  # big_vision's own loader must give back exactly what was saved, in both files.
  for name in ("bv_siglip.npz", "bv_siglip_bare.npz"):
    loaded = utils.load_params(os.path.join(HERE, name))
    assert jax.tree.all(jax.tree.map(np.array_equal, loaded, params)), name

  # 2. Scanned towers (stacked 'encoderblock' params), independently initialised.
  scan_model_cfg = {**BV_MODEL, "image": {**BV_MODEL["image"], "scan": True},
                    "text": {**BV_MODEL["text"], "scan": True}}
  scan_cfg = json.loads(json.dumps(scan_model_cfg))
  scan_model = two_towers.Model(**scan_model_cfg)
  scan_params = scan_model.init(jax.random.PRNGKey(3), images, texts)["params"]
  scan_params = perturb(jax.tree.map(np.asarray, scan_params), seed=4)
  assert scan_params["img"]["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (2, 32)
  scan_outputs = run(scan_model, scan_params, images, texts)
  save_npz(os.path.join(HERE, "bv_siglip_scan.npz"), {"params": scan_params})
  save_io(os.path.join(HERE, "bv_siglip_scan_io.npz"), scan_cfg, images, texts, scan_outputs)

  # Cross-check: big_vision's scan_to_pyloop + the unscanned model give the same outputs.
  unstacked = dict(scan_params)
  unstacked["img"] = vit.scan_to_pyloop(scan_params["img"])
  unstacked["txt"] = {**scan_params["txt"], **vit.scan_to_pyloop(
      {"Transformer": scan_params["txt"]["Encoder_0"]})}
  unstacked["txt"]["Encoder_0"] = unstacked["txt"].pop("Transformer")
  check = run(model, unstacked, images, texts)
  for k in scan_outputs:
    np.testing.assert_allclose(check[k], scan_outputs[k], rtol=1e-5, atol=1e-6)

  # 3. The fixture-1 checkpoint loaded at 48 px through big_vision's own load path, which
  # resamples the 4x4 position-embedding grid to 6x6 (scipy.ndimage.zoom, order 1).
  # The model takes its grid from the images; init at 48 px gives the target posemb shape.
  init_hi = model.init(jax.random.PRNGKey(5), images_hi, texts)["params"]
  loaded = two_towers.load(jax.tree.map(np.asarray, init_hi), ckpt,
                           ml_collections.ConfigDict(BV_MODEL))
  assert loaded["img"]["pos_embedding"].shape == (1, 36, 32)
  hi_outputs = run(model, loaded, images_hi, texts)
  save_io(os.path.join(HERE, "bv_siglip_resample_io.npz"), cfg, images_hi, texts, hi_outputs,
          pos_embedding=np.asarray(loaded["img"]["pos_embedding"]),
          image_size=np.array(BV_RESAMPLED_SIZE))
  print("img_emb[0, :4]", outputs["img_emb"][0, :4], "t", outputs["t"], "b", outputs["b"])


# big_vision's NaFlex ViT (SigLIP 2) in two_towers: a 4 x 4 learned position grid (16 x 16 in
# the released models) resized on a 16 x 16 canvas, patch size 4, patches of 4 images of
# different aspect ratios padded to NF_LEN.
NF_PATCH, NF_LEN = 4, 40
NF_GRIDS = [(2, 8), (6, 6), (8, 3), (3, 5)]  # patch rows x columns: 1:4, 1:1, 8:3, 3:5
NF_MODEL = dict(
    image_model="proj.image_text.naflex_vit",
    text_model="proj.image_text.text_transformer",
    image=dict(width=32, depth=2, mlp_dim=64, num_heads=2, pool_type="map",
               posemb="learn_2d(16)", nposemb=4),
    text=dict(vocab_size=BV_VOCAB, width=32, depth=2, mlp_dim=64, num_heads=2),
    out_dim=24,
    temperature_init=10.0,
    bias_init=-10.0,
)


def _naflex_patches(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Images of NF_GRIDS' sizes cut into patches in (row, column, channel) order (big_vision's
  `patchify`), padded to NF_LEN as big_vision pads: zero patches, coordinates and type."""
  out = {"patches": np.zeros((BATCH, NF_LEN, NF_PATCH * NF_PATCH * 3), np.float32),
         "yidx": np.zeros((BATCH, NF_LEN), np.int32), "xidx": np.zeros((BATCH, NF_LEN), np.int32),
         "mask": np.zeros((BATCH, NF_LEN), bool)}
  for i, (rows, cols) in enumerate(NF_GRIDS):
    p, n = NF_PATCH, rows * cols
    image = rng.uniform(-1, 1, (rows * p, cols * p, 3)).astype(np.float32)
    patches = image.reshape(rows, p, cols, p, 3).transpose(0, 2, 1, 3, 4).reshape(n, -1)
    out["patches"][i, :n] = patches
    out["yidx"][i, :n], out["xidx"][i, :n] = np.divmod(np.arange(n), cols)
    out["mask"][i, :n] = True
  return out


def _naflex() -> None:
  """Fixture 7: big_vision's NaFlex two_towers (.npz) and its embeddings of padded patches."""
  import jax
  from big_vision import utils
  from big_vision.models.proj.image_text import two_towers

  rng = np.random.default_rng(7)
  inputs = _naflex_patches(rng)
  texts = _bv_texts(rng)
  # big_vision's NaFlex input: (patches, type (1 patch, 0 padding), y, x).
  bv_image = (inputs["patches"], inputs["mask"].astype(np.int32), inputs["yidx"], inputs["xidx"])
  model = two_towers.Model(**NF_MODEL)
  init = jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(8), bv_image, texts)["params"])
  leaves, treedef = jax.tree.flatten(init)
  keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
  params = treedef.unflatten([np.asarray(x + NOISE * jax.random.normal(k, x.shape, x.dtype))
                              for x, k in zip(leaves, keys)])
  assert params["img"]["pos_embedding"].shape == (4, 4, 32)
  assert params["img"]["embedding"]["kernel"].shape == (NF_PATCH * NF_PATCH * 3, 32)

  def run(p):
    zimg, ztxt, out = model.apply({"params": p}, bv_image, texts)
    return dict(img_emb=np.asarray(zimg), txt_emb=np.asarray(ztxt), t=np.asarray(out["t"]),
                b=np.asarray(out["b"]))

  outputs = run(params)
  flat = lambda tree: dict(utils.tree_flatten_with_names(tree)[0])
  _check_sensitive(lambda p: run(utils.recover_tree(*zip(*p.items()))), flat(params), flat(init),
                   exempt=lambda name: name.endswith("key/bias"))
  # Padding is ignored: the same images without it (each alone) give the same embeddings.
  for i, (rows, cols) in enumerate(NF_GRIDS):
    n = rows * cols
    alone = tuple(x[i:i + 1, :n] for x in bv_image)
    zimg, _, _ = model.apply({"params": params}, alone, texts[i:i + 1])
    np.testing.assert_allclose(np.asarray(zimg)[0], outputs["img_emb"][i], atol=1e-5)

  path = os.path.join(HERE, "bv_naflex.npz")
  names_and_vals, _ = utils.tree_flatten_with_names({"params": params})
  np.savez(path, **{k: np.asarray(v) for k, v in names_and_vals})
  print(f"wrote {path}: {len(names_and_vals)} arrays, {os.path.getsize(path)} bytes")
  loaded = utils.load_params(path)
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, params))
  io_path = os.path.join(HERE, "bv_naflex_io.npz")
  np.savez(io_path, config=np.array(json.dumps(NF_MODEL, sort_keys=True)), texts=texts,
           patch_size=np.array(NF_PATCH), **inputs, **outputs)
  print(f"wrote {io_path}: {os.path.getsize(io_path)} bytes")
  print("img_emb[0, :4]", outputs["img_emb"][0, :4])


# open_clip: OpenAI-style CLIP (QuickGELU, ln_pre, class token, causal text mask, argmax/EOT
# pooling) with a small vocabulary: the synthetic token ids use vocab-2 as start and vocab-1 as
# end of text, so that argmax pooling finds the end token as with the real 49,408 vocabulary.
OC_EMBED_DIM, OC_VOCAB, OC_CONTEXT = 24, 512, 77
OC_TEXT = dict(context_length=OC_CONTEXT, vocab_size=OC_VOCAB, width=32, heads=2, layers=2)
OC_VIT = dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16)
# Modified ResNet: 3-conv stem, anti-aliased strides, attention pooling over width*32 channels;
# heads = width * 32 // head_width = 4.
OC_RESNET = dict(image_size=64, layers=(1, 1, 1, 1), width=8, head_width=64)
OC_MODELS = {
    # name: (vision_cfg, extra CLIP kwargs, seed)
    "oc_vit": (OC_VIT, {}, 10),
    "oc_vit_bias": (OC_VIT, dict(init_logit_scale=float(np.log(10.0)), init_logit_bias=-10.0), 20),
    "oc_resnet": (OC_RESNET, {}, 30),
}


def _oc_texts(rng: np.random.Generator) -> np.ndarray:
  """[start, words..., end, 0...] rows of varied length, one filling the whole context."""
  sot, eot = OC_VOCAB - 2, OC_VOCAB - 1
  ids = np.zeros((BATCH, OC_CONTEXT), np.int64)
  for row, n in enumerate([5, 12, 1, OC_CONTEXT - 2]):
    ids[row, :n + 2] = [sot, *rng.integers(1, sot, n), eot]
  return ids


def _openclip() -> None:
  """Fixtures 4-6: open_clip ViT and ModifiedResNet CLIP (.safetensors), CLIP BPE token ids."""
  import open_clip
  import safetensors.torch
  import torch

  torch.use_deterministic_algorithms(True)

  def perturb(model: torch.nn.Module, gen: torch.Generator) -> dict:
    # BatchNorm scales are drawn from U(0.5, 1.5): open_clip zero-inits the last one of each
    # bottleneck, and small noise around 0 would leave the residual branches nearly silent.
    bn_scales = {f"{n}.weight" for n, m in model.named_modules()
                 if isinstance(m, torch.nn.BatchNorm2d)}
    out = {}
    for name, x in model.state_dict().items():
      if not x.is_floating_point():  # BatchNorm's num_batches_tracked
        out[name] = x.clone()
      elif name in bn_scales:
        out[name] = torch.empty_like(x).uniform_(0.5, 1.5, generator=gen)
      elif name.endswith("running_var"):  # must stay positive
        out[name] = x * torch.empty_like(x).uniform_(0.5, 1.5, generator=gen)
      else:
        out[name] = x + NOISE * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return out

  for name, (vision_cfg, extra, seed) in OC_MODELS.items():
    torch.manual_seed(seed)
    model = open_clip.CLIP(OC_EMBED_DIM, dict(vision_cfg), dict(OC_TEXT), quick_gelu=True, **extra)
    model.eval()  # BatchNorm uses its running statistics
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = perturb(model, torch.Generator().manual_seed(seed + 1))
    rng = np.random.default_rng(seed)
    images = _images(rng, vision_cfg["image_size"])  # NHWC; open_clip takes NCHW
    texts = _oc_texts(rng)

    @torch.no_grad()
    def run(flat: dict) -> dict:
      model.load_state_dict({k: torch.as_tensor(v) for k, v in flat.items()}, strict=True)
      out = dict(
          img_emb=model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2),
                                     normalize=True).numpy(),
          txt_emb=model.encode_text(torch.from_numpy(texts), normalize=True).numpy(),
          logit_scale=model.logit_scale.detach().numpy().copy())
      if model.logit_bias is not None:
        out["logit_bias"] = model.logit_bias.detach().numpy().copy()
      return out

    as_np = lambda d: {k: v.numpy() for k, v in d.items()}
    _check_sensitive(run, as_np(state), as_np(init),
                     exempt=lambda k: k.endswith("k_proj.bias"))  # ResNet attention pool
    outputs = run(as_np(state))
    path = os.path.join(HERE, f"{name}.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    print(f"wrote {path}: {len(state)} tensors, {os.path.getsize(path)} bytes")
    cfg = dict(embed_dim=OC_EMBED_DIM, vision_cfg=vision_cfg, text_cfg=OC_TEXT, quick_gelu=True,
               **extra)
    io_path = os.path.join(HERE, f"{name}_io.npz")
    np.savez(io_path, config=np.array(json.dumps(cfg, sort_keys=True)), images=images,
             texts=texts.astype(np.int32), **outputs)
    print(f"wrote {io_path}: {os.path.getsize(io_path)} bytes")

  tokenizer = open_clip.get_tokenizer("ViT-B-32")
  ids = tokenizer(TOKENIZER_TEXTS).numpy()
  assert ids.shape == (len(TOKENIZER_TEXTS), OC_CONTEXT)
  path = os.path.join(HERE, "clip_tokens.json")
  with open(path, "w", encoding="utf-8") as f:
    f.write('{"tokenizer": "open_clip.get_tokenizer(\'ViT-B-32\')", "context_length": 77,\n')
    f.write(' "cases": [\n')
    rows = [json.dumps({"text": t, "ids": [int(i) for i in row]}, ensure_ascii=False)
            for t, row in zip(TOKENIZER_TEXTS, ids)]
    f.write(",\n".join(f"  {r}" for r in rows) + "\n ]}\n")
  print(f"wrote {path}: {len(rows)} strings")


# Varied strings for CLIP's tokenizer: what its cleaning (ftfy, HTML unescaping, whitespace,
# lower case), its pre-tokenization regex and its byte-level BPE each have to get right.
TOKENIZER_TEXTS = [
    "a photo of a cat",
    "A Photo Of A DOG",
    "a diagram of the water cycle.",
    "Hello, world! How are you?",
    "2 dogs and 13 cats in 2024",
    "3.14159 is pi; 1,000,000 is a million",
    "don't stop, it's fine, we're here, I'm sure, you'll see, they've gone, he'd know",
    "DON'T SHOUT, IT'S LOUD",
    "rock &amp; roll &lt;3 &quot;quoted&quot; &#39;single&#39;",
    "fish &amp;amp; chips",
    "<b>Bold</b> &amp;amp; <i>italic</i> &lt;tags&gt;",  # ftfy leaves entities beside tags
    "   leading and trailing spaces   ",
    "tabs\tand\nnew\r\nlines   and   runs",
    "café crème brûlée à la carte",
    "naïve façade, São Paulo, Zürich, Ærøskøbing",
    "Ελληνικά κείμενα",
    "Москва — столица России",
    "東京タワーの写真",
    "猫が好きです",
    "한국어 문장",
    "مرحبا بالعالم",
    "emoji 😀🎉👍🏽 and flags 🇫🇷",
    "snake_case-and-kebab-case/with/slashes",
    "https://example.com/path?query=1&x=2",
    "e-mail: someone@example.org #hashtag @mention",
    "\u201csmart quotes\u201d and \u2018single\u2019 \u2026 ellipsis",
    "ﬁne ligatures and ｆｕｌｌｗｉｄｔｈ",
    "mojibake: the cat doesnâ€™t care",
    "",
    "a",
    "!!!???...",
    "wow !→ a <end_of_text> in the middle",  # token 0 is '!'; the special token in text
    " ".join(["a long caption that keeps going"] * 20),
]


# Hugging Face transformers: tiny SiglipModel and CLIPModel (config kwargs), and open_clip's
# SigLIP (a timm trunk under visual.trunk) whose trunk is swapped for a tiny one.
HF_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
HF_VOCAB, HF_MAX_LEN = 128, 8
HF_MODELS = {
    "hf_siglip": ("SiglipConfig", dict(
        text_config=dict(HF_TOWER, vocab_size=HF_VOCAB, max_position_embeddings=HF_MAX_LEN),
        vision_config=dict(HF_TOWER, image_size=32, patch_size=8)), 20),
    "hf_clip": ("CLIPConfig", dict(
        text_config=dict(HF_TOWER, vocab_size=HF_VOCAB, max_position_embeddings=HF_MAX_LEN,
                         bos_token_id=HF_VOCAB - 2, eos_token_id=HF_VOCAB - 1),
        vision_config=dict(HF_TOWER, image_size=32, patch_size=8), projection_dim=24), 30),
}
HF_MODELS["hf_siglip2"] = ("Siglip2Config", dict(  # NaFlex: a 4 x 4 position grid
    text_config=dict(HF_TOWER, vocab_size=HF_VOCAB, max_position_embeddings=HF_MAX_LEN),
    vision_config=dict(HF_TOWER, num_patches=16, patch_size=8)), 60)
# NaFlex images: (patch rows, patch columns) of each, padded to NAFLEX_LEN patches. Four aspect
# ratios; grids both smaller and larger than the 4 x 4 position grid, so it is down- and
# up-sampled; three of the four padded.
NAFLEX_SHAPES, NAFLEX_LEN, NAFLEX_PATCH = ((2, 5), (4, 3), (3, 3), (1, 6)), 12, 8
# Our exports (written by `make_fixtures.py ours`), which transformers must load.
EXPORTS = {"hf_export_siglip": "SiglipModel", "hf_export_clip": "CLIPModel",
           "hf_export_siglip2": "Siglip2Model"}


def _naflex_inputs(rng: np.random.Generator) -> dict:
  """Patches [B, N, P*P*3] ((row, column, channel) order within a patch, as transformers'
  Siglip2ImageProcessor flattens them), random at padding too (no output may depend on it);
  yidx/xidx in row-major order over each image's grid, 0 at padding; mask; and transformers'
  spatial_shapes [B, 2]."""
  dim = NAFLEX_PATCH * NAFLEX_PATCH * 3
  out = dict(patches=rng.uniform(-1, 1, (BATCH, NAFLEX_LEN, dim)).astype(np.float32),
             yidx=np.zeros((BATCH, NAFLEX_LEN), np.int32),
             xidx=np.zeros((BATCH, NAFLEX_LEN), np.int32),
             mask=np.zeros((BATCH, NAFLEX_LEN), bool),
             spatial_shapes=np.array(NAFLEX_SHAPES, np.int64))
  for b, (h, w) in enumerate(NAFLEX_SHAPES):
    out["yidx"][b, :h * w], out["xidx"][b, :h * w] = np.divmod(np.arange(h * w), w)
    out["mask"][b, :h * w] = True
  return out


def _hf_forward(model, io: dict, texts):
  """transformers' forward on our inputs: NHWC images, or NaFlex patches for Siglip2Model."""
  import torch
  if "patches" in io:
    image = dict(pixel_values=torch.from_numpy(io["patches"]),
                 pixel_attention_mask=torch.from_numpy(io["mask"].astype(np.int64)),
                 spatial_shapes=torch.from_numpy(io["spatial_shapes"]))
  else:
    image = dict(pixel_values=torch.from_numpy(io["images"]).permute(0, 3, 1, 2))
  return model(input_ids=torch.from_numpy(np.asarray(texts)).long(), **image)
TIMM_SIGLIP = dict(
    embed_dim=32, init_logit_bias=-10.0,
    vision_cfg=dict(image_size=32, timm_model_name="vit_base_patch16_siglip_224",
                    timm_model_pretrained=False, timm_pool="map", timm_proj="none"),
    # The trunk that replaces the B/16 one: timm.create_model keyword overrides.
    trunk=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
    text_cfg=dict(context_length=HF_MAX_LEN, vocab_size=HF_VOCAB, width=32, heads=2, layers=2,
                  no_causal_mask=True, proj_bias=True, pool_type="last",
                  norm_kwargs=dict(eps=1e-6), act_kwargs=dict(approximate="tanh")))


def _hf_texts(rng: np.random.Generator, eos: int | None) -> np.ndarray:
  """Rows of ids in 1..vocab-3; with `eos`, each row ends in it and is then 0-padded."""
  ids = rng.integers(1, HF_VOCAB - 2, (BATCH, HF_MAX_LEN))
  if eos is not None:
    for row, n in enumerate([HF_MAX_LEN, 5, 2, HF_MAX_LEN - 1]):
      ids[row, n - 1], ids[row, n:] = eos, 0
  return ids


def _save_io(path: str, cfg: dict, **arrays) -> None:
  np.savez(path, config=np.array(json.dumps(cfg, sort_keys=True)), **arrays)
  print(f"wrote {path}: {os.path.getsize(path)} bytes")


def _torch_perturb(model, gen) -> tuple[dict, dict]:
  """(init, perturbed) float state dicts as numpy: every parameter plus N(0, NOISE) noise."""
  import torch
  init = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
  noisy = {k: (v + NOISE * torch.randn(v.shape, generator=gen, dtype=v.dtype)).numpy()
           for k, v in model.state_dict().items()}
  return init, noisy


def _hf() -> None:
  """Fixtures 7-9: transformers SiglipModel / CLIPModel directories, open_clip's timm SigLIP
  state dict; then our exports loaded by transformers (EXPORTS) checked and their outputs kept."""
  import open_clip
  import safetensors.torch
  import timm
  import torch
  import transformers

  torch.use_deterministic_algorithms(True)
  for name, (config_class, kwargs, seed) in HF_MODELS.items():
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(getattr(transformers, config_class)(**kwargs))
    model.eval()
    init, state = _torch_perturb(model, torch.Generator().manual_seed(seed + 1))
    rng = np.random.default_rng(seed)
    inputs = _naflex_inputs(rng) if name == "hf_siglip2" else dict(images=_images(rng, 32))
    texts = _hf_texts(rng, HF_VOCAB - 1 if name == "hf_clip" else None)

    @torch.no_grad()
    def run(flat: dict, model=model, inputs=inputs, texts=texts) -> dict:
      model.load_state_dict({k: torch.as_tensor(v) for k, v in flat.items()}, strict=True)
      out = _hf_forward(model, inputs, texts)
      res = dict(img_emb=out.image_embeds.numpy(), txt_emb=out.text_embeds.numpy(),
                 logit_scale=model.logit_scale.detach().numpy().copy())
      if hasattr(model, "logit_bias"):
        res["logit_bias"] = model.logit_bias.detach().numpy().copy()
      return res

    _check_sensitive(run, state, init,
                     exempt=lambda k: k.endswith("k_proj.bias"))  # softmax cancels it
    outputs = run(state)
    out_dir = os.path.join(HERE, name)
    model.save_pretrained(out_dir, safe_serialization=True)
    print(f"wrote {out_dir}: {os.listdir(out_dir)}, "
          f"{os.path.getsize(os.path.join(out_dir, 'model.safetensors'))} bytes of weights")
    _save_io(os.path.join(HERE, f"{name}_io.npz"), dict(config_class=config_class, **kwargs),
             **inputs, texts=texts.astype(np.int32), **outputs)

  # open_clip's SigLIP: CustomTextCLIP with a timm trunk, the trunk made tiny.
  torch.manual_seed(40)
  cfg = {k: v for k, v in TIMM_SIGLIP.items() if k != "trunk"}
  model = open_clip.CustomTextCLIP(**cfg)
  model.visual.trunk = timm.create_model(
      TIMM_SIGLIP["vision_cfg"]["timm_model_name"], num_classes=0, global_pool="map",
      **TIMM_SIGLIP["trunk"])
  model.eval()
  init, state = _torch_perturb(model, torch.Generator().manual_seed(41))
  rng = np.random.default_rng(40)
  images, texts = _images(rng, 32), _hf_texts(rng, None)

  @torch.no_grad()
  def run_oc(flat: dict) -> dict:
    model.load_state_dict({k: torch.as_tensor(v) for k, v in flat.items()}, strict=True)
    return dict(
        img_emb=model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2),
                                   normalize=True).numpy(),
        txt_emb=model.encode_text(torch.from_numpy(texts), normalize=True).numpy(),
        logit_scale=model.logit_scale.detach().numpy().copy(),
        logit_bias=model.logit_bias.detach().numpy().copy())

  _check_sensitive(run_oc, state, init, exempt=lambda k: False)
  outputs = run_oc(state)
  path = os.path.join(HERE, "oc_siglip.safetensors")
  safetensors.torch.save_file({k: torch.as_tensor(v).contiguous() for k, v in state.items()},
                              path)
  print(f"wrote {path}: {len(state)} tensors, {os.path.getsize(path)} bytes")
  _save_io(os.path.join(HERE, "oc_siglip_io.npz"), TIMM_SIGLIP, images=images,
           texts=texts.astype(np.int32), **outputs)

  # Our exports, as transformers loads them: the embeddings must be ours within 1e-5.
  for name, arch in EXPORTS.items():
    path = os.path.join(HERE, name)
    model = transformers.AutoModel.from_pretrained(path)
    assert type(model).__name__ == arch, (name, type(model).__name__)
    model.eval()
    io_path = os.path.join(HERE, f"{name}_io.npz")
    with np.load(io_path) as z:
      io = dict(z)
    with torch.no_grad():
      out = _hf_forward(model, io, io["texts"])
    ref = dict(hf_img_emb=out.image_embeds.numpy(), hf_txt_emb=out.text_embeds.numpy())
    for k in ("img_emb", "txt_emb"):
      err = float(np.max(np.abs(ref[f"hf_{k}"] - io[k])))
      assert err < 1e-5, f"{name}: transformers' {k} differs from ours by {err:.1e}"
      print(f"  {name} ({arch}): transformers' {k} is ours within {err:.1e}")
    if "tok_ids" in io:  # Its tokenizer, as transformers' AutoTokenizer reads the directory.
      tokenizer = transformers.AutoTokenizer.from_pretrained(path)
      ids = tokenizer([str(t).lower() for t in io["tok_texts"]], padding="max_length",
                      max_length=HF_MAX_LEN, truncation=True)["input_ids"]
      assert np.array_equal(np.array(ids), io["tok_ids"]), (ids, io["tok_ids"])
      print(f"  {name}: {type(tokenizer).__name__} gives our ids for {len(ids)} texts")
    io.update(ref)
    np.savez(io_path, **io)
    print(f"wrote {io_path}: {os.path.getsize(io_path)} bytes")


# Our models exported as Hugging Face directories (transformers loads them in `hf`).
OURS_EXPORT = {
    "hf_export_siglip": dict(
        image=dict(width=32, depth=2, mlp_dim=48, num_heads=4, patch_size=(8, 8), image_size=32,
                   pool_type="map", scan=True),
        text=dict(width=24, depth=3, mlp_dim=40, num_heads=2, vocab_size=HF_VOCAB,
                  max_len=HF_MAX_LEN, pool_type="last", act="gelu"),
        out_dim=(None, 32), temperature_init=10.0, bias_init=-10.0),
    "hf_export_clip": dict(
        image=dict(width=32, depth=2, mlp_dim=48, num_heads=2, patch_size=(8, 8),
                   image_size=32, pool_type="tok", posemb_cls=True, ln_pre=True,
                   patch_bias=False, head_bias=False, act="quick_gelu", ln_eps=1e-5),
        text=dict(width=24, depth=2, mlp_dim=40, num_heads=2, vocab_size=HF_VOCAB,
                  max_len=HF_MAX_LEN, causal=True, pool_type="argmax", head_bias=False,
                  act="quick_gelu", ln_eps=1e-5),
        out_dim=16, temperature_init=14.3, bias_init=None),
    "hf_export_siglip2": dict(
        image=dict(width=32, depth=2, mlp_dim=48, num_heads=4, patch_size=(NAFLEX_PATCH,) * 2,
                   naflex=True, posemb_grid=4, pool_type="map"),
        text=dict(width=24, depth=2, mlp_dim=40, num_heads=2, vocab_size=320,
                  max_len=HF_MAX_LEN, pool_type="last"),
        out_dim=(None, 32), temperature_init=10.0, bias_init=-10.0),
}
# The NaFlex export carries a sentencepiece model laid out as Gemma's (SigLIP 2's tokenizer);
# transformers' AutoTokenizer must give our ids for these texts.
TOKENIZER_CORPUS = ["a photo of a cat", "a photo of a dog", "two dogs on a red sofa",
                    "the quick brown fox jumps over the lazy dog"] * 40
GEMMA_TEXTS = ["A Photo of TWO Dogs", "猫 on a sofa", "the lazy dog " * 5, "",
               "Ünïcödé — “quotes”, 123"]


def _gemma_like(path: str) -> str:
  """A 300-piece sentencepiece model with Gemma's layout: <pad> 0, <eos> 1, <bos> 2, <unk> 3,
  byte fallback, no dummy prefix, no normalisation."""
  import io
  import sentencepiece as spm
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TOKENIZER_CORPUS), model_writer=proto, vocab_size=300,
      model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
      eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True,
      add_dummy_prefix=False, normalization_rule_name="identity", hard_vocab_limit=False,
      minloglevel=2)
  with open(path, "wb") as f:
    f.write(proto.getvalue())
  return path


def _ours() -> None:
  """Our random models exported with weights.export(..., 'hf'), with our embeddings."""
  import jax
  from big_vision_lite import weights
  from big_vision_lite.models.two_towers import TwoTowers

  for seed, (name, config) in enumerate(OURS_EXPORT.items()):
    model = TwoTowers(**config)
    shapes = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())["params"]
    rng = np.random.default_rng(50 + seed)
    params = jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(np.float32), shapes)
    inputs = (_naflex_inputs(rng) if config["image"].get("naflex")
              else dict(images=_images(rng, 32)))
    texts = _hf_texts(rng, HF_VOCAB - 1 if "clip" in name else None).astype(np.int32)
    image = ({k: inputs[k] for k in ("patches", "yidx", "xidx", "mask")} if "patches" in inputs
             else inputs["images"])
    zimg, ztxt, _ = model.apply({"params": params}, image, texts)
    extra = {}
    if config["image"].get("naflex"):  # With a Gemma-layout tokenizer and our ids for GEMMA_TEXTS.
      import tempfile
      from big_vision_lite.data import tokenizer as tok_lib
      spec = _gemma_like(os.path.join(tempfile.mkdtemp(), "tokenizer.model"))
      extra = dict(tok_texts=np.array(GEMMA_TEXTS),
                   tok_ids=tok_lib.get(spec).encode(GEMMA_TEXTS, HF_MAX_LEN))
    weights.export(params, config, os.path.join(HERE, name), "hf",
                   tokenizer=spec if extra else None)
    _save_io(os.path.join(HERE, f"{name}_io.npz"), config, **inputs, texts=texts,
             img_emb=np.asarray(zimg), txt_emb=np.asarray(ztxt), **extra)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("reference", choices=["bigvision", "openclip", "naflex", "ours", "hf"])
  args = parser.parse_args(argv)
  {"bigvision": _bigvision, "openclip": _openclip, "naflex": _naflex, "ours": _ours,
   "hf": _hf}[args.reference]()


if __name__ == "__main__":
  sys.exit(main())
