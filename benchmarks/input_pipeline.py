"""Measures the real-photo input pipeline against the train step it feeds; prints one JSON object.

    python benchmarks/input_pipeline.py [--config=configs/flickr8k_sat.py] [--num_images=1000]

Writes `--num_images` generated JPEGs of 500x375 (the size of COCO photos) and a Karpathy-split
annotations file to a temporary folder, builds the training run as `scripts/train.py` does, and
times, in the same process: the tf.data pipeline alone (images/sec: read, decode, resize,
batch) and the train step fed by it (examples/sec). The pipeline keeps up when their ratio is
above 1. With `--memory`, it also trains the same config for `--memory_steps` steps in fresh
processes over 1,000 and over 10,000 images and reports each one's peak host memory. With
`--features`, it also caches the frozen backbone's grids of every photo (float16, as
`scripts/precompute_features.py` does) and reports the cache's rate and size, and the train
step fed from the cache.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image
import tensorflow as tf

from captioning import features
from captioning import runtime
from captioning import trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/flickr8k_sat.py", "Config file.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Generated photos.", lower_bound=16)
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches of each measurement.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batches first.", lower_bound=1)
_MEMORY = flags.DEFINE_bool("memory", False, "Also compare peak memory at 1,000 and 10,000.")
_MEMORY_STEPS = flags.DEFINE_integer("memory_steps", 30, "Train steps of each memory run.")
_FEATURES = flags.DEFINE_bool("features", False, "Also time the feature cache and training on it.")
_TRAIN_ONLY = flags.DEFINE_bool("train_only", False, "Only train (a memory run's subprocess).")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the JSON here.")


def write_photos(folder, count):
  """`count` JPEGs of 500x375 with 5 captions each, and their dataset_*.json; returns its path."""
  os.makedirs(os.path.join(folder, "images"), exist_ok=True)
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:375, 0:500]
  entries = []
  for i in range(count):
    # Smooth colour fields with some noise: JPEG sizes like photos' (tens of kB).
    phase = rng.uniform(0, 6.3, 3)
    freq = rng.uniform(0.005, 0.05, 3)
    image = np.stack(
      [127 + 100 * np.sin(freq[c] * (x + y * (c - 1)) + phase[c]) for c in range(3)], -1
    )
    image += rng.normal(0, 12, image.shape)
    file = f"photo_{i:05d}.jpg"
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
      os.path.join(folder, "images", file), quality=90
    )
    split = "test" if i % 20 == 0 else "val" if i % 20 == 1 else "train"
    # Captions of 9 to 15 words, like Flickr8k's (mean 11.8) and COCO's (10.5).
    words = f"a person in a red{i % 5} coat walks a dog{i % 40} along the beach at sunset".split()
    sentences = [{"raw": " ".join(words[k % 3 : 15 - k])} for k in range(5)]
    entries.append({"filename": file, "split": split, "imgid": i, "sentences": sentences})
  path = os.path.join(folder, "dataset_generated.json")
  with open(path, "w") as f:
    json.dump({"images": entries}, f)
  return path


def build_run(config, folder, annotations, workdir):
  with config.unlocked():
    if "weights" in config.model.encoder:  # speed does not depend on the weights' values
      config.model.encoder.weights = "none"
    config.data.annotations = annotations
    config.data.image_root = os.path.join(folder, "images")
    config.data.cache_dir = os.path.join(folder, "cache")
    config.train.eval_every = 10**9  # nothing but training is measured
  return trainer.TrainingRun.create(config, workdir)


def rate(iterator, batches, warmup, work):
  """Batches per second of `work(next(iterator))` after `warmup` calls."""
  for _ in range(warmup):
    work(next(iterator))
  start = time.perf_counter()
  for _ in range(batches):
    work(next(iterator))
  return batches / (time.perf_counter() - start)


def peak_memory_mb():
  """This process's peak resident memory since it started (VmHWM where /proc has it: unlike
  getrusage's maxrss, it does not inherit the peak of the process that forked this one)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_run(count):
  """Peak host memory (MB) of a fresh process training over `count` photos."""
  command = [
    sys.executable, os.path.abspath(__file__), f"--config={flags.FLAGS['config'].config_filename}",
    f"--num_images={count}", f"--batches={_MEMORY_STEPS.value}", "--warmup=1", "--train_only",
  ]  # fmt: skip
  out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])["peak_memory_mb"]


def feature_cache(config, folder, batch):
  """Caches every split's grids and times training on them; returns the measurements."""
  cache = os.path.join(folder, "features")
  start = time.perf_counter()
  summary = features.precompute(config, cache, dtype="float16")
  seconds = time.perf_counter() - start
  images = sum(split["images"] for split in summary.values())
  size = sum(split["bytes"] for split in summary.values())
  with config.unlocked():
    config.data.features = cache
  run = trainer.TrainingRun.create(config, os.path.join(folder, "workdir_cached"))
  steps = iter(run.batches())
  step_rate = rate(
    steps, _BATCHES.value, _WARMUP.value, lambda b: run.train_step(b)["loss"].numpy()
  )
  return {
    "images": images,
    "dtype": "float16",
    "seconds": seconds,  # including the backbone's build and tracing
    "images_per_sec": images / seconds,
    "megabytes": size / 2**20,
    "kilobytes_per_image": size / images / 2**10,
    "cached_train_examples_per_sec": step_rate * batch,
  }


def main(argv):
  del argv
  settings = runtime.setup_process()
  config = _CONFIG.value
  with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    annotations = write_photos(folder, _NUM_IMAGES.value)
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    run = build_run(config, folder, annotations, os.path.join(folder, "workdir"))
    index_s = time.perf_counter() - start
    batch = config.train.batch_size
    if _TRAIN_ONLY.value:
      steps = iter(run.batches())
      rate(steps, _BATCHES.value, _WARMUP.value, lambda b: run.train_step(b)["loss"].numpy())
      print(json.dumps({"num_images": _NUM_IMAGES.value, "peak_memory_mb": peak_memory_mb()}))
      return
    pipeline = iter(run.stream.dataset(0))
    pipeline_rate = rate(pipeline, _BATCHES.value, _WARMUP.value, lambda b: b["image"].numpy())
    steps = iter(run.batches())
    step_rate = rate(
      steps, _BATCHES.value, _WARMUP.value, lambda b: run.train_step(b)["loss"].numpy()
    )
    result = {
      "config": flags.FLAGS["config"].config_filename,
      "image_size": config.data.image_size,
      "batch_size": batch,
      "num_images": _NUM_IMAGES.value,
      "photo_size": [500, 375],
      "generate_photos_sec": generate_s,
      "build_index_sec": index_s,  # including the first check of every file
      "pipeline_images_per_sec": pipeline_rate * batch,
      "train_examples_per_sec": step_rate * batch,
      "pipeline_to_train_ratio": pipeline_rate / step_rate,
      "peak_memory_mb": peak_memory_mb(),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "tensorflow": tf.__version__,
      "process_settings": settings,
    }
    if _FEATURES.value:
      result["feature_cache"] = feature_cache(config, folder, batch)
  if _MEMORY.value:
    small, large = memory_run(1000), memory_run(10000)
    result["memory_runs"] = {"steps": _MEMORY_STEPS.value, "peak_mb_1000_images": small,
                             "peak_mb_10000_images": large, "ratio": large / small}  # fmt: skip
  text = json.dumps(result, indent=2)
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
