"""Config loading, overrides, validation errors, durations."""

import pytest

from big_vision_lite import config as config_lib

DEFAULT = "configs/siglip_shapes.py"


def test_override_sets_typed_values():
  cfg = config_lib.load(DEFAULT)
  config_lib.parse_overrides(cfg, ["--config.total_steps=7", "--config.loss", "softmax",
                                   "--config.lr=1", "--config.model.image.variant=S/16"])
  assert (cfg.total_steps, cfg.loss, cfg.lr) == (7, "softmax", 1.0)
  assert cfg.model.image.variant == "S/16"


def test_unknown_key_names_it_and_suggests():
  cfg = config_lib.load(DEFAULT)
  with pytest.raises(config_lib.ConfigError,
                     match=r"unknown config key 'batchsize' \(did you mean 'batch_size'\?\)"):
    config_lib.parse_overrides(cfg, ["--config.batchsize=8"])
  with pytest.raises(config_lib.ConfigError, match="unknown config key 'model.image.widht'"):
    config_lib.parse_overrides(cfg, ["--config.model.image.widht=8"])


def test_wrong_type_is_rejected():
  cfg = config_lib.load(DEFAULT)
  with pytest.raises(config_lib.ConfigError, match="'batch_size' expects int.*'big'"):
    config_lib.parse_overrides(cfg, ["--config.batch_size=big"])


def test_validate_names_bad_values():
  cfg = config_lib.load(DEFAULT)
  cfg.loss = "hinge"
  with pytest.raises(config_lib.ConfigError, match="config.loss='hinge' is not one of"):
    config_lib.validate(cfg, 1)
  cfg = config_lib.load(DEFAULT)
  cfg.batch_size = 12
  with pytest.raises(config_lib.ConfigError, match="not divisible by the 8 devices"):
    config_lib.validate(cfg, 8)


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


@pytest.mark.parametrize("path", ["configs/siglip_shapes.py", "configs/clip_shapes.py",
                                  "configs/siglip_b16_shapes.py", "configs/siglip_coco.py",
                                  "configs/siglip_b16.py:shards=/data/s-{0..9}.tar"])
def test_shipped_configs_validate(path):
  config_lib.validate(config_lib.load(path), 8)


def test_config_file_arguments():
  cfg = config_lib.load("configs/siglip_b16.py:shards=/d/s-{0..3}.tar,vocab=1000")
  assert cfg.input.data.pattern == "/d/s-{0..3}.tar" and cfg.model.text.vocab_size == 1000
  with pytest.raises(config_lib.ConfigError, match=r"unknown configs/siglip_b16.py argument\(s\) "
                                                   r"\['shard'\]"):
    config_lib.load("configs/siglip_b16.py:shard=/d")
  with pytest.raises(config_lib.ConfigError, match="needs shards=PATTERN"):
    config_lib.load("configs/siglip_b16.py")
