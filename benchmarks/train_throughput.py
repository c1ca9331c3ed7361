"""Measures training and decoding throughput of a config; prints one JSON object.

    python benchmarks/train_throughput.py --config=configs/shapes_sat.py [--steps=50]

The run is built exactly as training builds it (`trainer.TrainingRun.create`, in a temporary
workdir), so the numbers are those of `scripts/train.py`: train steps/sec and examples/sec after
`--warmup` steps that trace the train step for each caption-length bucket, decoding images/sec
with the config's decoding and with greedy, and the host, for the record.
"""

import json
import os
import platform
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from captioning import decoding
from captioning import runtime
from captioning import trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_sat.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed train steps.", lower_bound=1)
_WARMUP = flags.DEFINE_integer(
  "warmup",
  40,
  "Untimed train steps first; enough to trace every batch length bucket.",
  lower_bound=1,
)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the JSON here.")
_LOGICAL_DEVICES = flags.DEFINE_integer(
  "logical_devices",
  1,
  "Split the CPU into this many logical devices (with --config.train.strategy=mirrored, one "
  "replica each).",
  lower_bound=1,
)
_DECODE = flags.DEFINE_bool("decode", True, "Also time decoding.")


def main(argv):
  del argv
  settings = runtime.setup_process()
  if _LOGICAL_DEVICES.value > 1:  # before TensorFlow creates its devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * _LOGICAL_DEVICES.value
    )
  config = _CONFIG.value
  with tempfile.TemporaryDirectory() as workdir:
    run = trainer.TrainingRun.create(config, workdir)
    batches = run.batches()
    lengths = set()
    for step in range(_WARMUP.value):
      lengths.add(run.stream.batch(step)["tokens"].shape[1])
      run.train_step(next(batches))["loss"].numpy()
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      out = run.train_step(next(batches))
    out["loss"].numpy()
    train_seconds = time.perf_counter() - start

    images = run.train_split.images.numpy(range(min(config.eval.batch_size, len(run.train_split))))
    repeats = 3
    decode_rates = {}
    # The config's own decoding, and greedy for comparison.
    for method in dict.fromkeys([config.decode.method, "greedy"] if _DECODE.value else []):
      search = decoding.Search(
        run.model,
        run.tokenizer,
        method=method,
        max_length=config.decode.max_length,
        beam_size=config.decode.beam_size,
      )
      search(images)["tokens"].numpy()  # trace
      start = time.perf_counter()
      for _ in range(repeats):
        search(images)["tokens"].numpy()
      name = "greedy" if method == "greedy" else f"beam{config.decode.beam_size}"
      decode_rates[name] = repeats * len(images) / (time.perf_counter() - start)

  result = {
    "config": flags.FLAGS["config"].config_filename,
    "batch_size": config.train.batch_size,
    "strategy": config.train.strategy,
    "replicas": run.strategy.num_replicas_in_sync,
    "mixed_precision": config.train.mixed_precision,
    "jit_compile": config.train.jit_compile,
    "train_step_compilations": run.train_step.compilations(),
    "train_steps_per_sec": _STEPS.value / train_seconds,
    "train_examples_per_sec": _STEPS.value * config.train.batch_size / train_seconds,
    "decode_images_per_sec": decode_rates,
    "decode_batch_size": len(images),
    "traced_batch_lengths": sorted(lengths),
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "tensorflow": tf.__version__,
    "devices": [d.name for d in tf.config.list_logical_devices()],
    "process_settings": settings,
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
