"""Test helpers: loading configs by path and reading TensorBoard scalars back."""

import glob
import importlib.util
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name="smoke", **overrides):
  """Loads configs/NAME.py and applies dotted overrides, e.g. {"train.num_steps": 20}."""
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def _summary_values(logdir):
  """Yields (step, value proto) for everything written to the event files in `logdir`."""
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        yield event.step, value


def read_scalars(logdir):
  """{tag: {step: value}} of the scalar summaries in `logdir`."""
  out = {}
  for step, value in _summary_values(logdir):
    if value.metadata.plugin_data.plugin_name == "scalars":
      out.setdefault(value.tag, {})[step] = float(tf.make_ndarray(value.tensor))
  return out


def read_tags(logdir):
  """{tag: plugin name} of everything written to `logdir`."""
  return {value.tag: value.metadata.plugin_data.plugin_name for _, value in _summary_values(logdir)}
