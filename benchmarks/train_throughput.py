"""Measures training and decoding throughput of a config; prints one JSON object.

    python benchmarks/train_throughput.py --config=configs/shapes_sat.py [--steps=50]

Numbers: train steps/sec and examples/sec (after `--warmup` steps that trace the train step
for each caption-length bucket),
greedy-decoding images/sec, and the host's CPU count, for the record.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from captioning import decoding
from captioning import experiment
from captioning import train
from captioning.data import datasets
from captioning.data import pipeline
from captioning.data import tokenizer as tokenizer_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_sat.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed train steps.", lower_bound=1)
_WARMUP = flags.DEFINE_integer(
  "warmup",
  40,
  "Untimed train steps first; enough to trace every batch length bucket.",
  lower_bound=1,
)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the JSON here.")


def main(argv):
  del argv
  config = _CONFIG.value
  train_split = datasets.load_split(config.data, "train", seed=config.seed)
  tokenizer = tokenizer_lib.Tokenizer.build(
    (c for caps in train_split.captions for c in caps), vocab_size=config.data.vocab_size
  )
  tokens = pipeline.encode_captions(train_split, tokenizer, config.data.max_caption_length)
  strategy = train.create_strategy(config.train.strategy)
  with strategy.scope():
    model = experiment.build_model(config, tokenizer.vocab_size)
    optimizer = experiment.build_optimizer(config.train)
    optimizer.build(model.trainable_variables)
  step_fn = train.make_train_step(model, optimizer, config, strategy, tokenizer.pad_id)
  stream = pipeline.TrainStream(
    train_split,
    tokens,
    config.train.batch_size,
    config.seed,
    length_multiple=config.data.bucket_length_multiple,
  )
  batches = iter(strategy.experimental_distribute_dataset(stream.dataset(0)))
  lengths = set()
  for step in range(_WARMUP.value):
    lengths.add(stream.batch(step)["tokens"].shape[1])
    step_fn(next(batches))["loss"].numpy()
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    out = step_fn(next(batches))
  out["loss"].numpy()
  train_seconds = time.perf_counter() - start

  images = train_split.images[: config.eval.batch_size]
  repeats = 3
  decode_rates = {}
  # The config's own decoding, and greedy for comparison.
  for method in dict.fromkeys([config.decode.method, "greedy"]):
    with config.unlocked():
      config.decode.method = method
    decoder = decoding.build_decoder(config.decode, model, tokenizer)
    decoder(images)["tokens"].numpy()  # trace
    start = time.perf_counter()
    for _ in range(repeats):
      decoder(images)["tokens"].numpy()
    name = "greedy" if method == "greedy" else f"beam{config.decode.beam_size}"
    decode_rates[name] = repeats * len(images) / (time.perf_counter() - start)

  result = {
    "config": flags.FLAGS["config"].config_filename,
    "batch_size": config.train.batch_size,
    "train_steps_per_sec": _STEPS.value / train_seconds,
    "train_examples_per_sec": _STEPS.value * config.train.batch_size / train_seconds,
    "decode_images_per_sec": decode_rates,
    "decode_batch_size": len(images),
    "traced_batch_lengths": sorted(lengths),
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "tensorflow": tf.__version__,
    "devices": [d.name for d in tf.config.list_logical_devices()],
    # The package turns TensorFlow's BFC CPU allocator on (captioning/__init__.py).
    "tf_cpu_allocator_use_bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"),
  }
  text = json.dumps(result, indent=2)
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")
  if not np.isfinite(float(out["loss"])):
    raise FloatingPointError("The benchmark's training loss is not finite.")


if __name__ == "__main__":
  app.run(main)
