"""Step time of one model in three codebases: big_vision, open_clip and ours, interleaved.

  python benchmarks/anchors.py --big_vision DIR --torch_python VENV/bin/python [--rounds 3]
      [--steps 20] [--parts]
  python benchmarks/train_step.py --config benchmarks/anchors.py --compare_plain  # ours alone

The model, built by each codebase's own code: ViT-S/16 at 64 px with a MAP head and no image
projection, S text tower (vocabulary 1000, 16 tokens, last-token pooling, 384-d projection with
a bias), learnable t and b: 45,202,178 parameters in each. Sigmoid loss, batch 32 of random
images and tokens, Adam (b1 0.9, b2 0.95) with clipping at global norm 1.0, decoupled weight
decay 1e-4 on matrices, 10 warm-up steps then cosine, each through the codebase's own optimiser
code (big_vision.optax.make, torch AdamW with open_clip_train's cosine_lr, our optim.py).

- big_vision: its `two_towers` model, its trainer's sigmoid loss (written out as
  big_vision/trainers/proj/image_text/siglip.py has it), its optax chain; the step computes the
  loss only (no norms), as the issue's reference harness did.
- open_clip: `open_clip.CLIP` with the timm ViT as open_clip's SigLIP configs use it
  (`global_pool='map'`, no projection), `open_clip.loss.SigLipLoss`, AdamW and clip_grad_norm_
  as open_clip_train's training loop calls them.
- ours: `train.build`, the trainer's step (non-finite guard, gradient norm, metrics), and the
  plain step of step_timing.plain_update (loss, gradient and optimiser only).

Each codebase runs in its own process, so that JAX's and PyTorch's thread pools never share
one; all are built and warmed up first, then every round times `--steps` steps of each in turn,
so that load from other work on the machine falls on all of them alike. The table gives the
median over rounds of each round's mean step time. `--parts` also times the forward pass (loss
only) and the gradient (forward and backward, no optimiser) of each, which says where a
difference lies.

Neither big_vision nor open_clip is a dependency of big_vision_lite; install them beside it:

  # big_vision (JAX): its source on PYTHONPATH, in the same environment as big_vision_lite
  # (jax, flax, optax, einops, absl-py, ml_collections). TensorFlow is not needed: when it is
  # not installed, this script puts a stub of the two names big_vision's utils.py touches on
  # the path (tensorflow.io.gfile and tensorflow.errors).
  git clone https://github.com/google-research/big_vision DIR   # pass --big_vision DIR

  # open_clip (PyTorch), in a separate venv (pass --torch_python VENV/bin/python):
  python3 -m venv VENV
  VENV/bin/pip install torch==2.13.0          # the CPU build; unpinned, pip pulls CUDA packages
  VENV/bin/pip install open-clip-torch        # brings timm and torchvision
  VENV/bin/pip install torch==2.13.0 'torchvision==0.28.*' --no-deps  # if it replaced torch
  # torchvision's registry build does not import beside the CPU torch (torchvision::nms); the
  # model code does not need that file, so in this throwaway venv empty it:
  : > VENV/lib/python3.11/site-packages/torchvision/_meta_registrations.py
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

BATCH, IMAGE, TOKENS, VOCAB, WIDTH = 32, 64, 16, 1000, 384
LR, B2, WD, CLIP, WARMUP, TOTAL = 1e-3, 0.95, 1e-4, 1.0, 10, 1000
PARAMS = 45_202_178
CODEBASES = ("big_vision", "open_clip", "ours", "ours_plain")
LABELS = {"big_vision": "big_vision two_towers + sigmoid loss + optax Adam",
          "open_clip": "open_clip (PyTorch)",
          "ours": "ours, train.make_update_fn (guard, norm, metrics)",
          "ours_plain": "ours, plain step (loss, gradient, optimiser)"}


def get_config(arg=None):
  """The model and optimiser above as a big_vision_lite config (also for train_step.py)."""
  del arg
  from big_vision_lite import config as config_lib  # pylint: disable=import-outside-toplevel
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                   "siglip_shapes.py"))
  c.batch_size, c.total_steps, c.lr, c.wd, c.grad_clip_norm = BATCH, TOTAL, LR, WD, CLIP
  c.optax = dict(name="adam", b1=0.9, b2=B2)
  c.schedule = dict(warmup_steps=WARMUP, decay_type="cosine")
  c.model = dict(image=dict(variant="S/16", image_size=IMAGE, pool_type="map", posemb="learn"),
                 text=dict(variant="S", vocab_size=VOCAB, max_len=TOKENS, pool_type="last"),
                 out_dim=(None, WIDTH), temperature_init=10.0, bias_init=-10.0)
  return c


def _host_batch():
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return (rng.uniform(-1, 1, (BATCH, IMAGE, IMAGE, 3)).astype(np.float32),
          rng.integers(1, VOCAB, (BATCH, TOKENS)).astype(np.int32))


# ---------------------------------------------------------------------------------------------
# Workers: each builds its codebase's step and answers "step N", "forward N", "grad N" with the
# mean seconds per call over N calls.

def _jax_timer(step, state, forward, grad, params_of):
  """A worker's timing functions for a JAX step (state donated) and its parts."""
  import jax  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import step_timing  # pylint: disable=import-outside-toplevel
  holder = {"state": state}

  def time_step(n):
    seconds, holder["state"] = step_timing.time_steps(step, holder["state"], None, n, warmup=0)
    return seconds

  def time_fn(fn):
    def timed(n):
      params = params_of(holder["state"])
      start = time.perf_counter()
      for _ in range(n):
        out = fn(params)
      jax.block_until_ready(out)
      return (time.perf_counter() - start) / n
    return timed

  return {"step": time_step, "forward": time_fn(forward), "grad": time_fn(grad)}


def _ours(plain: bool):
  import jax  # pylint: disable=import-outside-toplevel
  from big_vision_lite import config as config_lib  # pylint: disable=import-outside-toplevel
  from big_vision_lite import job, losses, sharding, train  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import step_timing  # pylint: disable=import-outside-toplevel
  cfg = config_lib.resolve(get_config())
  mesh = sharding.make_mesh(cfg.mesh)
  if plain:
    update, abstract_state, init_fn = step_timing.plain_update(cfg, mesh, TOTAL, WARMUP)
  else:
    _, abstract_state, init_fn, update, _ = train.build(cfg, mesh, TOTAL, WARMUP)
  batch = step_timing.random_batch(cfg, mesh)
  step = update.lower(abstract_state, train.abstract_batch(cfg, mesh)).compile()
  apply = job.apply_fn(cfg, job.build_model(cfg))
  contrastive = losses.make_loss(cfg.loss, mesh)

  def loss_fn(params):
    zimg, ztxt, out = apply(params, batch["image"], batch["labels"])
    return contrastive(zimg, ztxt, out["t"], out["b"])[0]

  timers = _jax_timer(lambda s, _: step(s, batch), init_fn(jax.random.key(0)),
                      jax.jit(loss_fn), jax.jit(jax.grad(loss_fn)), lambda s: s["params"])
  return timers, sum(x.size for x in jax.tree.leaves(abstract_state["params"]))


def _tensorflow_stub() -> str:
  """A folder with a `tensorflow` package that has only what big_vision's model code touches."""
  folder = tempfile.mkdtemp(prefix="tf_stub_")
  os.makedirs(os.path.join(folder, "tensorflow", "io"))
  with open(os.path.join(folder, "tensorflow", "__init__.py"), "w") as f:
    f.write("import types\nfrom tensorflow import io\n"
            "errors = types.SimpleNamespace(NotFoundError=FileNotFoundError)\n")
  with open(os.path.join(folder, "tensorflow", "io", "__init__.py"), "w") as f:
    f.write("from tensorflow.io import gfile\n")
  with open(os.path.join(folder, "tensorflow", "io", "gfile.py"), "w") as f:
    f.write("import os\nexists = os.path.exists\n")
  return folder


def _big_vision(path: str):
  import importlib.util  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, path)
  if importlib.util.find_spec("tensorflow") is None:
    sys.path.append(_tensorflow_stub())
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from big_vision import optax as bv_optax  # pylint: disable=import-outside-toplevel
  from big_vision.models.proj.image_text import two_towers  # pylint: disable=import-outside-toplevel
  model = two_towers.Model(
      image_model="vit", text_model="proj.image_text.text_transformer",
      image=dict(variant="S/16", pool_type="map", posemb="learn"),
      text=dict(variant="S", vocab_size=VOCAB), out_dim=(None, WIDTH),
      temperature_init=10.0, bias_init=-10.0)
  images, tokens = (jnp.asarray(x) for x in _host_batch())
  params = jax.jit(model.init)(jax.random.key(0), images, tokens)["params"]
  config = ml_collections.ConfigDict(dict(
      lr=LR, wd=WD, grad_clip_norm=CLIP, optax_name="scale_by_adam", optax=dict(b2=B2),
      schedule=dict(warmup_steps=WARMUP, decay_type="cosine")))
  tx, _ = bv_optax.make(config, params, sched_kw=dict(total_steps=TOTAL, batch_size=BATCH))

  def loss_fn(params):
    zimg, ztxt, extras = model.apply({"params": params}, images, tokens, train=True)
    logits = zimg @ ztxt.T * extras["t"] + extras["b"]  # [B, B]
    signs = 2 * jnp.eye(zimg.shape[0]) - 1  # +1 on the matching pairs, -1 elsewhere
    return -jnp.mean(jnp.sum(jax.nn.log_sigmoid(signs * logits), axis=-1))

  def update(state, _):
    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

  state = {"params": params, "opt": jax.jit(tx.init)(params)}
  step = jax.jit(update, donate_argnums=0)
  timers = _jax_timer(step, state, jax.jit(loss_fn), jax.jit(jax.grad(loss_fn)),
                      lambda s: s["params"])
  return timers, sum(x.size for x in jax.tree.leaves(params))


def _open_clip():
  import numpy as np  # pylint: disable=import-outside-toplevel
  import open_clip  # pylint: disable=import-outside-toplevel
  import timm  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from open_clip_train.scheduler import cosine_lr  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  trunk = "vit_base_patch16_siglip_224"  # open_clip's SigLIP towers are timm ViTs like this
  model = open_clip.CLIP(
      embed_dim=WIDTH, init_logit_scale=math.log(10.0), init_logit_bias=-10.0,
      vision_cfg=dict(timm_model_name=trunk, timm_pool="map", timm_proj="none",
                      image_size=IMAGE),
      text_cfg=dict(context_length=TOKENS, vocab_size=VOCAB, width=WIDTH, heads=6, layers=12,
                    no_causal_mask=True, proj_bias=True, pool_type="last",
                    norm_kwargs=dict(eps=1e-6)))
  # TimmModel does not pass the image size or the width on to timm: the S trunk at 64 px.
  model.visual.trunk = timm.create_model(trunk, img_size=IMAGE, embed_dim=WIDTH, num_heads=6,
                                         num_classes=0, global_pool="map")
  model.train()
  images, tokens = _host_batch()
  images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # NCHW
  tokens = torch.from_numpy(tokens.astype(np.int64))
  loss = open_clip.loss.SigLipLoss()
  # open_clip_train's grouping: no weight decay on gains, biases, norms and t, b.
  decay = [p for n, p in model.named_parameters()
           if not (p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_" in n)]
  others = [p for n, p in model.named_parameters() if all(p is not q for q in decay)]
  optimizer = torch.optim.AdamW([{"params": others, "weight_decay": 0.0},
                                 {"params": decay, "weight_decay": WD / LR}],
                                lr=LR, betas=(0.9, B2), eps=1e-8)
  schedule = cosine_lr(optimizer, LR, WARMUP, TOTAL)
  counter = {"step": 0}

  def loss_value():
    zimg, ztxt, scale, bias = model(images, tokens)
    return loss(zimg, ztxt, scale, bias)

  def step():
    schedule(counter["step"])
    counter["step"] += 1
    optimizer.zero_grad(set_to_none=True)
    loss_value().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, norm_type=2.0)
    optimizer.step()

  def grad():
    model.zero_grad(set_to_none=True)
    loss_value().backward()

  def forward():
    with torch.no_grad():
      loss_value()

  def timed(fn):
    def run(n):
      start = time.perf_counter()
      for _ in range(n):
        fn()
      return (time.perf_counter() - start) / n
    return run

  params = sum(p.numel() for p in model.parameters())
  return {"step": timed(step), "forward": timed(forward), "grad": timed(grad)}, params


def worker(name: str, big_vision: str | None) -> None:
  """Builds one codebase's step, warms it up, then answers timing requests on stdin."""
  if name == "open_clip":
    timers, params = _open_clip()
  elif name == "big_vision":
    timers, params = _big_vision(big_vision)
  else:
    timers, params = _ours(plain=name == "ours_plain")
  for timer in timers.values():
    timer(2)  # Compilation and warm-up.
  print(json.dumps({"params": int(params)}), flush=True)
  for line in sys.stdin:
    what, n = line.split()
    print(json.dumps({"seconds": timers[what](int(n))}), flush=True)


# ---------------------------------------------------------------------------------------------
# The driver.

def _missing(args) -> list[str]:
  """What is not installed, in words."""
  missing = []
  if not (args.big_vision and os.path.exists(os.path.join(
      args.big_vision, "big_vision", "models", "proj", "image_text", "two_towers.py"))):
    missing.append(f"big_vision's source (--big_vision {args.big_vision or 'DIR'})")
  check = subprocess.run([args.torch_python, "-c", "import open_clip, open_clip_train, timm"],
                         capture_output=True, text=True, check=False) if args.torch_python else None
  if check is None or check.returncode:
    missing.append(f"open_clip with torch and timm (--torch_python {args.torch_python or 'PYTHON'}"
                   + (f": {check.stderr.strip().splitlines()[-1]}" if check and check.stderr
                      else "") + ")")
  return missing


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--big_vision", default=None, help="a checkout of google-research/big_vision")
  p.add_argument("--torch_python", default=None,
                 help="the python of a venv with torch, open-clip-torch and timm")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=20, help="timed steps per round and codebase")
  p.add_argument("--parts", action="store_true",
                 help="also time the forward pass and the gradient of each codebase")
  p.add_argument("--part_steps", type=int, default=5,
                 help="timed calls per round of the forward pass and the gradient (--parts)")
  p.add_argument("--only", nargs="+", choices=CODEBASES, default=CODEBASES)
  p.add_argument("--worker", choices=CODEBASES, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    worker(args.worker, args.big_vision)
    return
  missing = _missing(args) if {"big_vision", "open_clip"} & set(args.only) else []
  if missing:
    print("not installed: " + "; ".join(missing) + "\n\nInstall them beside big_vision_lite:"
          + __doc__[__doc__.index("\n  # big_vision (JAX)"):], file=sys.stderr)
    sys.exit(2)

  here = os.path.abspath(__file__)
  procs = {}
  started = time.time()
  load_before = os.getloadavg()
  for name in args.only:  # One at a time: compilation is not timed, but it loads the machine.
    python = args.torch_python if name == "open_clip" else sys.executable
    cmd = [python, here, "--worker", name] + (["--big_vision", args.big_vision]
                                              if args.big_vision else [])
    procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reply = json.loads(procs[name].stdout.readline() or "{}")
    if "params" not in reply:
      sys.exit(f"error: the {name} worker failed to start (see its messages above)")
    print(f"{name}: {reply['params']:,} parameters" +
          ("" if reply["params"] == PARAMS else f" (expected {PARAMS:,})"), flush=True)

  def ask(name, what, n):
    procs[name].stdin.write(f"{what} {n}\n")
    procs[name].stdin.flush()
    return json.loads(procs[name].stdout.readline())["seconds"]

  parts = ("step", "forward", "grad") if args.parts else ("step",)
  times = {(name, part): [] for name in args.only for part in parts}
  for r in range(args.rounds):
    for part in parts:
      for name in args.only:
        times[name, part].append(ask(name, part, args.steps if part == "step" else
                                     args.part_steps))
    print(f"round {r + 1}: " + ", ".join(f"{name} {times[name, 'step'][-1] * 1e3:.0f} ms"
                                         for name in args.only), flush=True)
  for proc in procs.values():
    proc.stdin.close()
    proc.wait()

  median = statistics.median
  print(f"\n{args.rounds} interleaved rounds of {args.steps} steps"
        + (f" ({args.part_steps} forward passes and gradients)" if args.parts else "")
        + f"; load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; {time.time() - started:.0f} s")
  print("| codebase | median step | rounds | vs big_vision | vs open_clip |")
  print("|---|---|---|---|---|")
  for name in args.only:
    step = median(times[name, "step"])
    ratio = lambda other: (f"{step / median(times[other, 'step']):.2f}x"
                           if other in args.only else "-")
    print(f"| {LABELS[name]} | {step * 1e3:.0f} ms | "
          + ", ".join(f"{t * 1e3:.0f}" for t in times[name, "step"])
          + f" | {ratio('big_vision')} | {ratio('open_clip')} |")
  if args.parts:
    print("\n| codebase | forward (loss) | gradient (fwd + bwd) | step - gradient |")
    print("|---|---|---|---|")
    for name in args.only:
      fwd, grad, step = (median(times[name, k]) for k in ("forward", "grad", "step"))
      print(f"| {LABELS[name]} | {fwd * 1e3:.0f} ms | {grad * 1e3:.0f} ms | "
            f"{(step - grad) * 1e3:.0f} ms |")


if __name__ == "__main__":
  main()
