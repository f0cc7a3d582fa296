"""Config loading, the schema (keys, types, defaults, whole sections), overrides, durations."""

import dataclasses
import os
import subprocess
import sys

import pytest

from big_vision_lite import config as config_lib
from big_vision_lite import losses, schema
from big_vision_lite.models import resnet as resnet_lib
from big_vision_lite.models import text as text_lib
from big_vision_lite.models import vit as vit_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "siglip_shapes.py")


def _cfg(*argv, overrides=None):
  return config_lib.from_args(DEFAULT, list(argv), overrides)


def test_override_sets_typed_values():
  cfg = _cfg("--config.total_steps=7", "--config.loss", "softmax", "--config.lr=1",
             "--config.model.image.variant=S/16")
  assert (cfg.total_steps, cfg.loss, cfg.lr) == (7, "softmax", 1.0)
  assert isinstance(cfg.lr, float) and cfg.model.image.variant == "S/16"


@pytest.mark.parametrize("key,value", [
    ("optax.eps", 1e-6), ("schedule.min_lr", 1e-5), ("model.image.scan", True),
    ("total_examples", 1000), ("schedule.warmup_examples", 512), ("grad_clip_norm", None),
    ("model.text.remat_policy", "dots_saveable"), ("input.num_workers", 2),
    ("max_nonfinite_steps", 3), ("input.max_consecutive_skips", 7)])
def test_every_documented_key_can_be_set_from_the_command_line(key, value):
  """Keys the file does not set are still settable: the schema, not the file, says what exists."""
  cfg = _cfg(f"--config.{key}={value!r}")
  node = cfg
  for part in key.split("."):
    node = node[part]
  assert node == value


def test_resolved_config_holds_every_schema_key_with_its_default():
  cfg = _cfg()
  assert cfg.optax.eps == 1e-8 and cfg.schedule.min_lr == 0.0 and cfg.model.image.scan is False
  assert cfg.max_nonfinite_steps == 10 and cfg.input.max_consecutive_skips == 100
  assert cfg.model.image.image_size == 48 and cfg.model.text.max_len == 12  # The file's values.


def test_unknown_key_names_it_and_suggests():
  with pytest.raises(config_lib.ConfigError,
                     match=r"unknown config key 'batchsize' \(did you mean 'batch_size'\?\)"):
    _cfg("--config.batchsize=8")
  with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'model.image.widht' "
                                                   r"\(did you mean 'model.image.width'\?\)"):
    _cfg("--config.model.image.widht=8")


def test_whole_section_override_is_checked_key_by_key():
  with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'schedule.warmup_step' "
                                                   r"\(did you mean 'schedule.warmup_steps'\?\)"):
    _cfg("--config.schedule={'warmup_step': 10}")
  cfg = _cfg("--config.schedule={'warmup_steps': 10}")  # The rest of the section: defaults.
  assert cfg.schedule.warmup_steps == 10 and cfg.schedule.decay_type == "cosine"
  with pytest.raises(config_lib.ConfigError, match=r"config.schedule.decay_type='exp' is not one"):
    _cfg("--config.schedule={'decay_type': 'exp'}")


def test_allowed_values_are_the_implementing_modules_with_a_hint():
  from big_vision_lite import optim  # pylint: disable=import-outside-toplevel
  from big_vision_lite.models import layers  # pylint: disable=import-outside-toplevel
  for arg, known, hint in (("--config.loss=sigmod", losses.NAMES, "sigmoid"),
                           ("--config.schedule.decay_type=cosin", optim.DECAYS, "cosine"),
                           ("--config.model.text.act=quick_gelu2", layers.ACTIVATIONS,
                            "quick_gelu")):
    with pytest.raises(config_lib.ConfigError) as e:
      _cfg(arg)
    assert str(e.value).endswith(f"is not one of {list(known)} (did you mean {hint!r}?)"), e.value
  with pytest.raises(config_lib.ConfigError, match=r"type='zeroshott' is not one of .* "
                                                   r"\(did you mean 'zeroshot'\?\)"):
    _cfg("--config.evals={'z': {'type': 'zeroshott'}}")


def test_defined_in_reads_literals_from_source_and_imports_anything_else():
  from big_vision_lite.data import shapes  # pylint: disable=import-outside-toplevel
  assert schema.defined_in("data.shapes", "SPLITS")() == ("train", "validation", "test")  # Keys.
  assert schema.defined_in("data.shapes", "COLOR_NAMES")() == shapes.COLOR_NAMES  # tuple(COLORS)


def test_loading_a_config_imports_no_model_code():
  """Reading a config file and its overrides needs no JAX; checking it against the schema
  imports the modules of the objectives it names (their options live with their terms)."""
  code = ("import sys\nfrom big_vision_lite import config\n"
          f"config.parse_overrides(config._plain(config.load({DEFAULT!r})), ['--config.evals={{}}'])\n"
          "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code],
                       capture_output=True, text=True, check=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.stdout.strip() == "[]"


def test_keys_of_another_variant_are_rejected_naming_the_variant():
  with pytest.raises(config_lib.ConfigError, match=r"'optax.momentum'.*name='adam' takes"):
    _cfg("--config.optax.momentum=0.5")
  cfg = _cfg("--config.optax={'name': 'sgd', 'momentum': 0.5}")
  assert cfg.optax.to_dict() == {"name": "sgd", "momentum": 0.5}
  # Switching the variant by its key keeps what the new option takes and drops the rest.
  assert _cfg("--config.optax.name=sgd").optax.to_dict() == {"name": "sgd", "momentum": 0.9}
  with pytest.raises(config_lib.ConfigError, match=r"'input.data.pattern'.*name='shapes' takes"):
    _cfg("--config.input.data.pattern=/d")
  cfg = _cfg("--config.input.data={'name': 'coco_captions', 'data_dir': '/d'}")  # tfds: any name
  assert cfg.input.data.split == "train" and cfg.input.data.caption_key == "captions/text"


def test_wrong_types_and_values_are_rejected():
  for arg, message in [
      ("--config.batch_size=big", r"config.batch_size expects int, got 'big'"),
      ("--config.lr=-1", r"config.lr must be > 0"),
      ("--config.loss=hinge", r"config.loss='hinge' is not one of"),
      ("--config.model.image.scan=1", r"config.model.image.scan expects bool"),
      ("--config.lr_mults=(('[', 0.0),)", r"bad regex '\['"),
      ("--config.mesh=(('data',),)", r"config.mesh\[0\] expects"),
      ("--config.model.image.depth.x=1", r"config.model.image.depth .* has no key 'x'")]:
    with pytest.raises(config_lib.ConfigError, match=message):
      _cfg(arg)


def test_config_file_keys_are_checked_too(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("import ml_collections\n"
                  "def get_config():\n"
                  "  c = ml_collections.ConfigDict({'batch_size': 8, 'total_steps': 2})\n"
                  "  c.schedule = dict(warmup_step=1)\n"
                  "  return c\n")
  with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'schedule.warmup_step'"):
    config_lib.from_args(str(path))
  path.write_text("import ml_collections\n"
                  "def get_config():\n"
                  "  return ml_collections.ConfigDict({'total_steps': 2})\n")
  with pytest.raises(config_lib.ConfigError, match=r"config.batch_size is required"):
    config_lib.from_args(str(path))


def test_evaluator_options_are_checked_against_the_evaluator():
  with pytest.raises(config_lib.ConfigError,
                     match=r"'evals.zeroshot_shape.num_exmaples' \(did you mean "
                           r"'evals.zeroshot_shape.num_examples'\?\)"):
    _cfg("--config.evals.zeroshot_shape.num_exmaples=3")
  with pytest.raises(config_lib.ConfigError, match=r"config.evals.z.type='linear' is not one of"):
    _cfg("--config.evals={'z': {'type': 'linear'}}")
  with pytest.raises(config_lib.ConfigError, match=r"config.evals.z.dataset is required"):
    _cfg("--config.evals={'z': {'type': 'zeroshot'}}")
  assert _cfg("--config.evals={}").evals.to_dict() == {}


def test_validate_names_bad_combinations():
  cfg = _cfg("--config.batch_size=12")
  with pytest.raises(config_lib.ConfigError, match="not divisible by the 8 devices"):
    config_lib.validate(cfg, 8)
  cfg = _cfg("--config.total_steps=None")
  with pytest.raises(config_lib.ConfigError, match=r"set config.total_steps"):
    config_lib.validate(cfg, 1)


def test_short_runs_cap_the_warmup_with_one_warning():
  total, warmup, warnings = config_lib.durations(_cfg("--config.total_steps=20"))
  assert (total, warmup) == (20, 2) and len(warnings) == 1 and "capped at 2" in warnings[0]
  total, warmup, warnings = config_lib.durations(
      _cfg("--config.total_examples=12800", "--config.total_steps=None",
           "--config.schedule.warmup_steps=None", "--config.schedule.warmup_examples=1280"))
  assert (total, warmup, warnings) == (100, 10, [])


def test_missing_config_file():
  with pytest.raises(config_lib.ConfigError, match="config file 'nope.py' not found"):
    config_lib.load("nope.py")


def test_resolve_steps():
  cfg = {"total_steps": None, "total_examples": 1000, "total_epochs": None}
  assert config_lib.resolve_steps(cfg, "total", batch_size=100) == 10
  assert config_lib.resolve_steps({"total_epochs": 2}, "total", 100, epoch_size=500) == 10
  assert config_lib.resolve_steps({}, "warmup", 100, default=3) == 3
  with pytest.raises(config_lib.ConfigError, match="set only one of"):
    config_lib.resolve_steps({"total_steps": 1, "total_examples": 5}, "total", 1)
  with pytest.raises(config_lib.ConfigError, match="needs a dataset of known size"):
    config_lib.resolve_steps({"total_epochs": 1}, "total", 1)


@pytest.mark.parametrize("path", ["siglip_shapes.py", "clip_shapes.py", "siglip_b16_shapes.py",
                                  "siglip_coco.py", "siglip_b16.py:shards=/data/s-{0..9}.tar",
                                  "siglip2_shapes.py",
                                  "siglip2_b16.py:shards=/data/s-{0..9}.tar,tokenizer=/g.model"])
def test_shipped_configs_resolve_and_validate(path):
  cfg = config_lib.from_args(os.path.join(ROOT, "configs", path))
  config_lib.validate(cfg, 8)
  assert config_lib.from_args(os.path.join(ROOT, "configs", path)) == cfg  # Deterministic.


def test_config_json_round_trip(tmp_path):
  cfg = _cfg("--config.lr_mults=(('img/.*', 0.5),)")
  (tmp_path / "config.json").write_text(config_lib.to_json(cfg))
  assert config_lib.from_json(str(tmp_path / "config.json")) == cfg


def test_config_file_arguments():
  cfg = config_lib.load(os.path.join(ROOT, "configs", "siglip_b16.py:shards=/d/s-{0..3}.tar,vocab=1000"))
  assert cfg.input.data.pattern == "/d/s-{0..3}.tar" and cfg.model.text.vocab_size == 1000
  with pytest.raises(config_lib.ConfigError, match=r"unknown configs/siglip_b16.py argument\(s\) "
                                                   r"\['shard'\]"):
    config_lib.load(os.path.join(ROOT, "configs", "siglip_b16.py:shard=/d"))
  with pytest.raises(config_lib.ConfigError, match="needs shards=PATTERN"):
    config_lib.load(os.path.join(ROOT, "configs", "siglip_b16.py"))


def test_schema_matches_the_code_it_configures():
  """The schema's tower keys and defaults are those the modules accept."""
  for section, module in ((schema.VIT, vit_lib.ViT), (schema.TEXT, text_lib.TextTransformer),
                          (schema.RESNET, resnet_lib.ResNet)):
    fields = {f for f in module.__dataclass_fields__ if f not in ("parent", "name")}
    keys = set(section.fields) - {"type"}
    assert keys == fields - {"num_classes", "dtype_mm"}, (module.__name__, keys ^ fields)
    for key in keys:  # Defaults of optional module fields agree (None: the schema sets them).
      module_default = module.__dataclass_fields__[key].default
      if module_default is not None and module_default is not dataclasses.MISSING:
        assert section.fields[key].default() == module_default, key


def test_docs_config_table_is_generated_from_the_schema():
  from big_vision_lite.tools import readme_tables  # pylint: disable=import-outside-toplevel
  doc = open(os.path.join(ROOT, "docs", "training.md")).read()
  assert readme_tables.block(doc, "config-table") == schema.markdown_table(), (
      "docs/training.md config table is stale: run `python -m big_vision_lite.tools.readme_tables`")


def test_bad_config_key_fails_at_start_with_a_clear_message(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "big_vision_lite.train", "--config", DEFAULT, "--workdir",
       str(tmp_path), "--config.batchsize=8"],
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip() == ("error: unknown config key 'batchsize' "
                                "(did you mean 'batch_size'?)")


def test_objectives_are_checked_at_start():
  """Unknown terms, a start outside [0, 1) and a config written with the old `task` key."""
  with pytest.raises(config_lib.ConfigError, match=r"unknown objective 'objectives.contrastiv' "
                     r"\(did you mean 'objectives.contrastive'\?\); known: \["):
    _cfg("--config.objectives={'contrastiv': {}}")
  for start in (1.0, 1.5):
    with pytest.raises(config_lib.ConfigError, match=r"objectives.contrastive.start=.* must be "
                       r"in \[0, 1\)"):
      config_lib.validate(_cfg(f"--config.objectives.contrastive.start={start}"), 1)
  with pytest.raises(config_lib.ConfigError, match="objectives.contrastive.start must be >= 0"):
    _cfg("--config.objectives.contrastive.start=-0.1")
  with pytest.raises(config_lib.ConfigError, match="config.objectives is empty"):
    config_lib.validate(_cfg("--config.objectives={}"), 1)
  old = _cfg().to_dict()
  del old["objectives"]  # As a config.json written before objectives existed.
  upgraded = config_lib.resolve({**old, "task": "classify", "classify": {"dataset": "shapes_size"}})
  assert list(upgraded.objectives) == ["classify"]
  assert upgraded.objectives.classify.dataset == "shapes_size"
