"""Config files loaded by path (captioning/config_files.py), as `config_flags` loads them."""

import os

import pytest

from captioning import config_files
import helpers


def test_a_config_loads_by_name_or_by_path_with_its_argument():
  by_name = config_files.load("smoke", "transformer")
  path = os.path.join(helpers.ROOT, "configs", "smoke.py")
  assert config_files.load(f"{path}:transformer").to_dict() == by_name.to_dict()
  assert by_name.model.decoder.name == "transformer"
  assert config_files.load("smoke").model.decoder.name != "transformer"


def test_a_config_builds_on_its_base_loaded_beside_it():
  smoke = config_files.load("smoke")
  base = config_files.base(os.path.join(helpers.ROOT, "configs", "smoke.py"), "shapes_sat")
  assert base.get_config().data.name == smoke.data.name == "shapes"
  assert base.get_config().data.image_size != smoke.data.image_size  # smoke shrinks it


def test_dotted_overrides_set_known_keys_and_reject_unknown_ones():
  config = config_files.override(config_files.load("smoke"), {"train.num_steps": 7})
  assert config.train.num_steps == 7
  with pytest.raises(KeyError):  # the config is locked: a typo fails loudly
    config_files.override(config, {"train.num_stepz": 7})


def test_a_missing_config_file_says_where_it_looked():
  with pytest.raises(FileNotFoundError, match=r"no_such_config\.py"):
    config_files.load("no_such_config")
