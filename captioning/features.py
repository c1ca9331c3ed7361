"""A feature cache: a frozen backbone run once over every split, read back by index.

`precompute(config, output)` (scripts/precompute_features.py) writes, per split, the frozen
network's grids as a memory-mapped `.npy` array [N, H, W, C] (float16 by default), the split's
ids, and the backbone's weights, in chunks that survive an interruption (a rerun continues
where it stopped). Training reads the cache when `config.data.features` names it: a batch is
gathered from the memory map a whole batch at a time inside tf.data (one `tf.numpy_function`
per batch), so the stream stays addressable by step. The cache records what it depends on
(encoder, its weights, image size, resizing, the dataset); a cache that does not match the
config, or whose ids no longer match the dataset's, is an error, never silently used. The
model keeps its encoder (with the cache's backbone weights), so it captions raw images later.
"""

import dataclasses
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tqdm

from captioning import experiment
from captioning import files
from captioning import registry
from captioning.data import datasets
from captioning.data import pipeline
from captioning.models import encoders

_META = "meta.json"
_WEIGHTS = "backbone.weights.h5"


class StaleCacheError(ValueError):
  """A feature cache that does not belong to this config or dataset."""


def depends_on(config):
  """What a cache's contents depend on: the frozen encoder and the images it saw."""
  encoder = registry.plain(config.model.encoder)
  encoder.pop("project_dim", None)  # trained on top of the cache, not part of it
  # The dataset's own keys (which images) and the image size; not how captions are batched.
  data = {k: v for k, v in registry.plain(config.data).items()
          if k in ("name", "image_size") or k not in datasets.PIPELINE_KEYS}  # fmt: skip
  return {"encoder": encoder, "data": data, "seed": config.seed}


def _backbone(config):
  encoder = encoders.build_encoder(config.model.encoder)
  if not hasattr(encoder, "frozen_maps"):
    raise ValueError(
      f"Bad config: a feature cache needs a pretrained backbone (config.model.encoder.name is "
      f"{config.model.encoder.name!r}, which trains with the captioner)."
    )
  size = config.data.image_size
  encoder.build((None, size, size, 3))
  return encoder


class CachedFeatures:
  """A split's cached grids, memory-mapped; an image source (see `images.ArrayImages`).

  Args:
    path: the split's `.npy` file.
    pixels: the split's image source, for pictures (attention over the image).
  """

  key, per_batch = "features", True

  def __init__(self, path, pixels, rows=None):
    self.path, self.pixels = path, pixels
    self.array = np.load(path, mmap_mode="r")
    self.rows = np.arange(len(self.array)) if rows is None else np.asarray(rows)

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, index):
    return CachedFeatures(self.path, self.pixels[index], self.rows[index])

  @property
  def image_shape(self):
    return tuple(self.array.shape[1:])

  def numpy(self, indices):
    """float32 [len(indices), H, W, C]."""
    return np.asarray(self.array[self.rows[np.asarray(indices, dtype=np.int64)]], np.float32)

  def pictures(self, indices):
    return self.pixels.numpy(indices)

  def loader(self):
    """A function for tf.data: int64 indices [B] -> float32 [B, H, W, C], one numpy call.

    The rows are gathered in the cache's dtype and widened by TF (multithreaded; numpy's
    float16 -> float32 conversion took longer than the gather)."""
    shape, stored = self.image_shape, tf.as_dtype(self.array.dtype)

    def gather(indices):
      return self.array[self.rows[np.asarray(indices, dtype=np.int64)]]

    def load(indices):
      features = tf.numpy_function(gather, [indices], stored)
      features.set_shape([None, *shape])
      return tf.cast(features, tf.float32)

    return load


class CachedDataset:
  """A dataset whose splits read their images from a feature cache (all else unchanged)."""

  def __init__(self, dataset, cache_dir):
    self.dataset, self.cache_dir = dataset, cache_dir

  def __getattr__(self, name):
    return getattr(self.dataset, name)

  def split(self, name):
    split = self.dataset.split(name)
    path = os.path.join(self.cache_dir, f"{name}.npy")
    index_path = os.path.join(self.cache_dir, f"{name}.json")
    if not os.path.exists(index_path):
      raise StaleCacheError(
        f"The feature cache {self.cache_dir} has no complete split {name!r}: run "
        "scripts/precompute_features.py with this config (it resumes where it stopped)."
      )
    with open(index_path) as f:
      ids = json.load(f)["image_ids"]
    if ids != split.image_ids.tolist():
      raise StaleCacheError(
        f"The feature cache {self.cache_dir} split {name!r} holds other images than the "
        "dataset now has (its annotations or files changed): precompute it again."
      )
    return dataclasses.replace(split, images=CachedFeatures(path, split.images))


def open_dataset(config):
  """The dataset `config.data` describes, reading from its feature cache if it names one.

  Raises:
    StaleCacheError: the cache was made for another encoder, image size or dataset.
  """
  dataset = datasets.create(config.data, config.seed)
  if not config.data.features:
    return dataset
  cache_dir = os.path.expanduser(config.data.features)
  meta_path = os.path.join(cache_dir, _META)
  if not os.path.exists(meta_path):
    raise StaleCacheError(f"config.data.features: no feature cache at {cache_dir}.")
  with open(meta_path) as f:
    recorded = json.load(f)["depends_on"]
  wanted = json.loads(json.dumps(depends_on(config)))
  if recorded != wanted:
    diffs = experiment.config_diffs(recorded, wanted)
    raise StaleCacheError(
      f"The feature cache {cache_dir} was made for another config; precompute it again or "
      f"point config.data.features elsewhere. Differences: {'; '.join(diffs)}"
    )
  return CachedDataset(dataset, cache_dir)


def load_backbone_weights(model, config):
  """Gives `model`'s backbone the weights its feature cache was made with."""
  if config.data.features:
    path = os.path.join(os.path.expanduser(config.data.features), _WEIGHTS)
    model.encoder.network.load_weights(path)


def precompute(config, output, dtype="float16", batch_size=32):
  """Runs the config's frozen backbone over every split once and writes the cache.

  Resumable: each split is written in chunks and a rerun continues after the last complete
  one; a finished split is skipped.

  Args:
    config: a config whose `model.encoder` is a pretrained backbone.
    output: the cache folder (then `config.data.features`).
    dtype: "float16" (half the disk) or "float32".
    batch_size: images per forward pass.

  Returns:
    {split: {"images", "seconds", "bytes", "skipped"}} of the splits written now.
  """
  if dtype not in ("float16", "float32"):
    raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
  if config.train.fine_tune.layers:
    raise ValueError("Bad config: a fine-tuned backbone cannot be cached (its grids change).")
  backbone = _backbone(config)
  os.makedirs(output, exist_ok=True)
  meta_path = os.path.join(output, _META)
  meta = {"depends_on": json.loads(json.dumps(depends_on(config))), "dtype": dtype}
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      if json.load(f) != meta:
        raise StaleCacheError(f"{output} holds a feature cache of another config; use a new "
                              "--output.")  # fmt: skip
  files.write_json(meta_path, meta)
  weights_path = os.path.join(output, _WEIGHTS)
  if os.path.exists(weights_path):  # a resumed run continues with the same weights
    backbone.network.load_weights(weights_path)
  else:
    backbone.network.save_weights(weights_path)
  extract = tf.function(backbone.frozen_maps)
  dataset = datasets.create(config.data, config.seed)
  summary = {}
  for name in dataset.splits:
    index_path = os.path.join(output, f"{name}.json")
    if os.path.exists(index_path):
      logging.info("Split %s is cached already.", name)
      continue
    split = dataset.split(name)
    shape = (len(split), *backbone.network.output_shape[1:])
    path = os.path.join(output, f"{name}.npy")
    progress_path = path + ".progress"
    done = 0
    if os.path.exists(progress_path) and os.path.exists(path):
      with open(progress_path) as f:
        done = int(f.read())
      array = np.load(path, mmap_mode="r+")
      if array.shape != shape:
        raise StaleCacheError(f"{path} has shape {array.shape}, expected {shape}")
    else:
      array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    start = time.perf_counter()
    batches = pipeline.image_batches(split, batch_size, start=done)
    bar = tqdm.tqdm(total=len(split), initial=done, desc=f"{name} features", unit="image")
    for batch in batches:
      maps = extract(batch["image"]).numpy()
      array[done : done + len(maps)] = maps.astype(dtype)
      array.flush()
      done += len(maps)
      files.write_text(progress_path, str(done))
      bar.update(len(maps))
    bar.close()
    del array
    files.write_json(index_path, {"image_ids": split.image_ids.tolist(), "skipped": split.skipped})
    os.remove(progress_path)
    summary[name] = {
      "images": len(split),
      "seconds": time.perf_counter() - start,
      "bytes": os.path.getsize(path),
      "skipped": {reason: entry["count"] for reason, entry in split.skipped.items()},
    }
  return summary
