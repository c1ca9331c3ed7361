"""Test helpers: loading configs by path and reading TensorBoard scalars back."""

import glob
import importlib.util
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name="smoke", **overrides):
  """Loads configs/NAME.py and applies dotted overrides, e.g. {"model.decoder.hidden_dim": 32}."""
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    *parents, field = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
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


def model_sections(encoder=None, neck=None, decoder=None):
  """A tiny `config.model`: a 2-stage small CNN (32 px -> 8x8) and a small SAT decoder.

  Each argument updates that section, e.g. decoder={"attention_coverage": True}.
  """
  return {
    "encoder": {"name": "small_cnn", "widths": (8, 16), "strides": (2, 2), **(encoder or {})},
    "neck": dict(neck or {}),
    "decoder": {
      "name": "sat_lstm",
      "embed_dim": 16,
      "hidden_dim": 24,
      "attention_dim": 12,
      **(decoder or {}),
    },
  }


def tiny_captioner(vocab_size=20, image_size=32, output_bias=None, dtype=None, **sections):
  """A built Captioner of `model_sections(**sections)`."""
  from captioning.models import captioner  # pylint: disable=import-outside-toplevel

  model = captioner.build_captioner(
    model_sections(**sections), vocab_size, output_bias=output_bias, dtype=dtype
  )
  model.build({"image": (None, image_size, image_size, 3), "tokens": (None, None)})
  return model
