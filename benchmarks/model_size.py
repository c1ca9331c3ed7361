"""Parameter counts and FLOPs per example of configs; prints one JSON object.

    python benchmarks/model_size.py                       # every config in configs/
    python benchmarks/model_size.py --config=configs/flickr8k_sat.py --config=configs/smoke.py

Each model is built as training builds it (`experiment.build_model`) with
`model.encoder.weights=none`, so nothing is downloaded. FLOPs are TensorFlow's profiler count
of one example's teacher-forced forward pass (a multiply-add is 2 FLOPs) at the config's image
size and longest caption (`data.max_caption_length` words plus <start>), split into the encoder
with its neck ("encoder") and the rest ("decoder"). The vocabulary is the shapes grammar's for
`shapes` configs and `data.vocab_size` (an upper bound) for real-photo ones, unless
`--vocab_size` sets it.
"""

import glob
import json
import os

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from captioning import config_files
from captioning import experiment
from captioning import files
from captioning import runtime
from captioning.data import tokenizer as tokenizer_lib
from captioning.data.shapes import facts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS = flags.DEFINE_multi_string(
  "config", None, "Config files (path[:arg]); default: every file in configs/."
)
_VOCAB = flags.DEFINE_integer("vocab_size", None, "Vocabulary size to build every model with.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the JSON here.")


def vocabulary_size(config):
  if _VOCAB.value:
    return _VOCAB.value
  if config.data.name == "shapes":
    words = " ".join(sorted(facts.VOCABULARY))
    return tokenizer_lib.Tokenizer.build([words], vocab_size=10_000, min_count=1).vocab_size
  return config.data.vocab_size


def flops(fn, *specs):
  """The profiler's float-operation count of `fn` traced at `specs` (fully static shapes)."""
  concrete = tf.function(fn).get_concrete_function(*specs)
  _, graph_def = convert_to_constants.convert_variables_to_constants_v2_as_graph(concrete)
  with tf.Graph().as_default() as graph:
    tf.graph_util.import_graph_def(graph_def, name="")
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    report = tf.compat.v1.profiler.profile(
      graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
  return int(report.total_float_ops)


def count(variables):
  return int(sum(v.numpy().size for v in variables))


def measure(spec):
  config = config_files.load(spec)
  config.unlock()
  if "weights" in config.model.encoder:
    config.model.encoder.weights = "none"
  config.train.mixed_precision = None  # FLOPs of the float32 graph (the profiler's dtype)
  vocab = vocabulary_size(config)
  model = experiment.build_model(config, vocab)
  size, steps = config.data.image_size, config.data.max_caption_length + 1
  image = tf.TensorSpec([1, size, size, 3], tf.uint8)
  tokens = tf.TensorSpec([1, steps], tf.int32)
  total = flops(lambda i, t: model({"image": i, "tokens": t})["logits"], image, tokens)
  encoder = flops(lambda i: model.encode(i), image)
  frozen = count(model.non_trainable_weights)
  return {
    "config": os.path.relpath(spec, ROOT) if os.path.isabs(spec) else spec,
    "encoder": config.model.encoder.name,
    "decoder": config.model.decoder.name,
    "image_size": size,
    "caption_positions": steps,
    "vocab_size": vocab,
    "params": count(model.weights),
    "trainable_params": count(model.trainable_weights),
    "frozen_params": frozen,
    "gflops_per_example": round(total / 1e9, 3),
    "gflops_encoder": round(encoder / 1e9, 3),
    "gflops_decoder": round((total - encoder) / 1e9, 3),
  }


def main(argv):
  del argv
  runtime.setup_process()
  specs = _CONFIGS.value or sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
  result = {"models": [measure(spec) for spec in specs]}
  text = json.dumps(result, indent=2)
  print(text)
  if _OUTPUT.value:
    files.write_text(_OUTPUT.value, text + "\n")


if __name__ == "__main__":
  app.run(main)
