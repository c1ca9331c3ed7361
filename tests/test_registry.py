"""Registries and building parts from their config sections."""

import ml_collections
import pytest

from captioning import registry


class Part:
  def __init__(self, size, scale=1.0, *, name="part"):
    if size < 1:
      raise ValueError(f"size must be >= 1, got {size}")
    self.size, self.scale, self.name = size, scale, name


def test_a_section_reaches_its_constructor_whole_and_bad_keys_are_named():
  parts = registry.Registry("config.model.part.name", {"part": Part})
  section = ml_collections.ConfigDict({"name": "part", "size": 3, "scale": 0.5})
  built = parts.build(section, "config.model.part", name="mine")
  assert (built.size, built.scale, built.name) == (3, 0.5, "mine")
  with pytest.raises(ValueError, match=r"config\.model\.part\.sise is not an argument of Part"):
    parts.build({"name": "part", "sise": 3}, "config.model.part")
  with pytest.raises(ValueError, match=r"config\.model\.part lacks size"):
    parts.build({"name": "part"}, "config.model.part")
  with pytest.raises(ValueError, match=r"config\.model\.part\.name is set by the code"):
    registry.check_section(Part, {"size": 1, "name": "x"}, "config.model.part", ("name",))
  with pytest.raises(ValueError, match=r"config\.model\.part: size must be >= 1, got 0"):
    parts.build({"name": "part", "size": 0}, "config.model.part")
  with pytest.raises(ValueError, match=r"unknown config\.model\.part\.name 'other'; available"):
    parts.build({"name": "other", "size": 1}, "config.model.part")
  with pytest.raises(ValueError, match=r"config\.model\.part\.name is missing"):
    parts.build({"size": 1}, "config.model.part")


def test_entries_by_path_are_imported_on_first_use_and_names_are_unique():
  parts = registry.Registry("x.name", {"rng": "random:Random"})
  import random  # pylint: disable=import-outside-toplevel

  assert parts.get("rng") is random.Random and parts.names() == ["rng"]
  parts.register("part")(Part)
  with pytest.raises(ValueError, match="registered twice"):
    parts.register("part")(Part)
