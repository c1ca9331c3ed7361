"""Config files (configs/*.py) loaded by path, as `ml_collections.config_flags` loads them.

Config files are not a package. A config that builds on another (configs/smoke.py on
configs/shapes_sat.py) loads its base with `base(__file__, "shapes_sat")`; tests and benchmarks
load a config by name or path with `load`, and change it with dotted keys through `override`, as
`--config.model.decoder.hidden_dim=32` does on the command line.
"""

import importlib.util
import os

# The repository's configs/, beside the package: where `load` finds a config given by name.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_module(path):
  """The config file at `path`, executed as a module (not a package import)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No config file at {path!r}.")
  name = "config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def base(config_file, name):
  """The config file NAME.py beside `config_file` (a config file's `__file__`), as a module."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py"))


def load(name_or_path, arg=None):
  """`get_config(arg)` of a config file: a path ("configs/smoke.py", or "path:arg" as on the
  command line) or a name in the repository's configs/ ("smoke")."""
  path, _, spec_arg = name_or_path.partition(":")
  if not path.endswith(".py"):
    path = os.path.join(CONFIG_DIR, f"{path}.py")
  return load_module(path).get_config(arg if arg is not None else spec_arg or None)


def override(config, overrides):
  """Sets `overrides` {dotted key: value} in `config` (e.g. {"train.num_steps": 10}); returns
  it. Under `config.lock()` an unknown key raises, as on the command line."""
  for key, value in (overrides or {}).items():
    *parents, field = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  return config
