"""One job of the benchmark suite (`bench.py`), run in a process of its own: build, warm up, time.

A job is a dict {"config", "kind", "precision", "jit", "windows", "window_seconds"} (and
optionally "overrides" of config keys, and "vocab_size"); kind is
"project" (the config's model and `train_step.make_train_step`, what `scripts/train.py` runs),
"baseline" or "tutorial_port" (`tutorial_steps.py`). `run(job)` returns its measurements.
"""

import os
import resource
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks import flops
from benchmarks import tutorial_steps
from captioning import config_files
from captioning import experiment
from captioning import features as features_lib
from captioning import losses
from captioning import registry
from captioning import runtime
from captioning import train_step as train_step_lib
from captioning import trainer
from captioning.data import datasets
from captioning.data import pipeline
from captioning.models import encoders

# Random features and captions of the tutorial-size configs: images in the cache, and ids.
CACHE_IMAGES = 256
VOCAB_SIZE = 5000  # the tutorials' vocabulary
PAD_ID, START_ID, END_ID, FIRST_WORD_ID = 0, 1, 2, 4


def load_config(name, precision="float32", jit=False, overrides=None):
  """configs/NAME.py with the job's precision and XLA setting, and no downloads; `overrides`
  {dotted key: value} change more (the tests' tiny sizes)."""
  config = config_files.load(name)
  config.unlock()
  config.train.mixed_precision = None if precision == "float32" else precision
  config.train.jit_compile = bool(jit)
  if "weights" in config.model.encoder:
    config.model.encoder.weights = "none"
  return config_files.override(config, overrides)


def _grid(encoder, config):
  """(H, W, C): the grid `encoder` (built) makes of the config's images, what a cache holds."""
  size = config.data.image_size
  return tuple(encoder.compute_output_shape((1, size, size, 3))[1:])


def _cached_stream(config, directory, vocab_size, grid):
  """A TrainStream over a feature cache of random features of shape `grid`, with random
  captions of `data.max_caption_length` words (no padding): what training on a cache reads."""
  rng = np.random.default_rng(0)
  path = os.path.join(directory, "train.npy")
  array = np.lib.format.open_memmap(path, "w+", np.float16, (CACHE_IMAGES, *grid))
  for i in range(CACHE_IMAGES):
    array[i] = rng.standard_normal(grid).astype(np.float16)
  array.flush()
  del array
  length = config.data.max_caption_length + 2
  tokens = rng.integers(FIRST_WORD_ID, vocab_size, (CACHE_IMAGES, 1, length), dtype=np.int32)
  tokens[:, :, 0], tokens[:, :, -1] = START_ID, END_ID
  split = datasets.CaptionSplit(
    name="train",
    images=features_lib.CachedFeatures(path, pixels=None),
    image_ids=np.arange(CACHE_IMAGES, dtype=np.int64),
    captions=[["random"]] * CACHE_IMAGES,
  )
  return pipeline.TrainStream(split, tokens, config.train.batch_size, config.seed)


def _pipeline_rate(dataset, batch_size, batches=30):
  """Examples/sec of a tf.data pipeline alone (after its first batch)."""
  iterator = iter(dataset)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def _time(step_fn, batches, batch_size, windows, window_seconds, warmup):
  """Runs `warmup` steps, then `windows` windows of about `window_seconds`: (median
  examples/sec, median step seconds, the token lengths of the timed batches)."""
  for _ in range(warmup):
    _, out = step_fn(next(batches))
  _sync(out)
  start = time.perf_counter()
  for _ in range(2):
    _, out = step_fn(next(batches))
  _sync(out)
  per_step = (time.perf_counter() - start) / 2
  steps = max(1, round(window_seconds / per_step))
  rates, step_times, lengths = [], [], []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      length, out = step_fn(next(batches))
      lengths.append(length)
    _sync(out)
    seconds = time.perf_counter() - start
    rates.append(steps * batch_size / seconds)
    step_times.append(seconds / steps)
  return statistics.median(rates), statistics.median(step_times), lengths, rates


def _sync(out):
  for value in tf.nest.flatten(out):
    value.numpy()


def _project_forward_flops(model, image_key, image_shape, length):
  """Matmul FLOPs of one training example's forward pass at `length` tokens per caption.

  Traced in inference mode: dropout changes no product (and its seed variable's updates do not
  freeze into a constant graph). The model's maths: a SAT decoder is traced on its step-by-step
  path, not through its fused recurrence, which computes the same numbers with more FLOPs in
  products that run faster (G = f W_z once per caption, `sat_recurrence`); MFU does not credit
  an implementation's extra FLOPs."""
  fused = getattr(model.decoder, "fused_recurrence", None)
  if fused is not None:
    model.decoder.fused_recurrence = False
  try:
    counts = flops.matmul_flops(
      lambda images, tokens: model({image_key: images, "tokens": tokens})["logits"],
      tf.TensorSpec([1, *image_shape], tf.uint8 if image_key == "image" else tf.float32),
      tf.TensorSpec([1, length - 1], tf.int32),
    )
  finally:
    if fused is not None:
      model.decoder.fused_recurrence = fused
  return flops.total(counts)


def run(job):
  """Measures one job (see the module docstring); returns a dict."""
  runtime.setup_process()
  config = load_config(job["config"], job["precision"], job["jit"], job.get("overrides"))
  batch_size = config.train.batch_size
  tutorial_size = config.data.name != "shapes"
  vocab = job.get("vocab_size", VOCAB_SIZE)
  with tempfile.TemporaryDirectory() as directory:
    if tutorial_size:
      if job["kind"] == "tutorial_port":  # only the grid's shape
        encoder = encoders.build_encoder(config.model.encoder)
        encoder.build((None, config.data.image_size, config.data.image_size, 3))
        grid = _grid(encoder, config)
      else:  # the project's model, which the project's step and the baseline train
        model = experiment.build_model(config, vocab)
        optimizers = experiment.build_optimizers(config, model)
        loss_fn = registry.call_with_section(losses.CaptionLoss, config.loss, "config.loss")
        grid = _grid(model.encoder, config)
      stream = _cached_stream(config, directory, vocab, grid)
      image_key, image_shape = "features", grid
    result = {**job, "batch_size": batch_size}
    if job["kind"] == "project":
      if tutorial_size:
        step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        strategy = tf.distribute.get_strategy()
        train_step = train_step_lib.make_train_step(
          model, optimizers, loss_fn, strategy, PAD_ID, config.train, config.seed, step_counter
        )
        dataset = stream.dataset(0)
        warmup = 2
      else:
        run_ = trainer.TrainingRun.create(config, os.path.join(directory, "workdir"))
        model, train_step, stream = run_.model, run_.train_step, run_.stream
        dataset = run_.batches()
        image_key, size = "image", config.data.image_size
        image_shape = (size, size, 3)
        warmup = 40  # every caption-length bucket traced
        step_counter = run_.step
      result["input_pipeline_examples_per_sec"] = _pipeline_rate(stream.dataset(0), batch_size)

      def step_fn(batch):
        out = train_step(batch)
        step_counter.assign_add(1)
        return int(batch["tokens"].shape[1]), out["loss"]

      batches = iter(dataset)
      rate, step_time, lengths, rates = _time(
        step_fn, batches, batch_size, job["windows"], job["window_seconds"], warmup
      )
      forward = {
        n: _project_forward_flops(model, image_key, image_shape, n) for n in sorted(set(lengths))
      }
      mean_forward = float(np.mean([forward[n] for n in lengths]))
      result.update(
        dims=_dims(config, model, image_shape),
        caption_tokens=sorted(set(lengths)),
        forward_flops_per_example=mean_forward,
        train_flops_per_example=flops.TRAIN_FACTOR * mean_forward,
        train_step_compilations=train_step.compilations(),
      )
      if hasattr(model.decoder, "attention_ops"):  # whether the SAT's compiled CPU kernels ran
        result["attention_kernels"] = not job["jit"] and model.decoder.attention_ops() is not None
    else:
      if not tutorial_size:
        raise ValueError(f"{job['kind']} runs at a tutorial size only")
      result["input_pipeline_examples_per_sec"] = _pipeline_rate(stream.dataset(0), batch_size)
      batches = iter(stream.dataset(0))
      length = config.data.max_caption_length + 2
      if job["kind"] == "baseline":
        step = tutorial_steps.baseline_step(model, optimizers["optimizer"][0], loss_fn, PAD_ID)

        def step_fn(batch):
          return length, step(batch)

        # The baseline recomputes the feature projection at every step; its useful FLOPs are
        # the project's (counted on the project's graph), its executed ones these:
        executed = flops.total(
          flops.matmul_flops(
            lambda f, t: step.loss({"features": f, "tokens": t}, training=False),
            tf.TensorSpec([1, *grid], tf.float32),
            tf.TensorSpec([1, length], tf.int32),
          )
        )
        useful = _project_forward_flops(model, "features", grid, length)
        result["dims"] = _dims(config, model, grid)
      else:
        port = tutorial_steps.TutorialPort(
          config.model.decoder.embed_dim, config.model.decoder.hidden_dim, vocab, START_ID
        )
        locations, channels = grid[0] * grid[1], grid[2]

        def step_fn(batch):
          feats = tf.reshape(batch["features"], [-1, locations, channels])
          return length, port.train_step(feats, batch["tokens"])[0]

        executed = flops.total(
          flops.matmul_flops(
            port.forward_logits,
            tf.TensorSpec([1, locations, channels], tf.float32),
            tf.TensorSpec([1, length], tf.int32),
          )
        )
        units, embed = config.model.decoder.hidden_dim, config.model.decoder.embed_dim
        # W1(features) at every step but the first is recomputation.
        recomputed = (length - 2) * 2 * locations * embed * units
        useful = executed - recomputed
        result["dims"] = {
          "locations": locations,
          "channels": channels,
          "projected_channels": embed,
          "embed_dim": embed,
          "gru_units": units,
          "attention_units": units,
          "vocab_size": vocab,
          "decoder_steps": length - 1,
        }
      rate, step_time, _, rates = _time(
        step_fn, batches, batch_size, job["windows"], job["window_seconds"], 2
      )
      result.update(
        forward_flops_per_example=float(executed),
        train_flops_per_example=float(flops.TRAIN_FACTOR * executed),
        useful_train_flops_per_example=float(flops.TRAIN_FACTOR * useful),
      )
  result.update(
    train_examples_per_sec=rate,
    step_seconds=step_time,
    window_examples_per_sec=rates,
    peak_host_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  )
  return result


def _dims(config, model, image_shape):
  """The dims a result was measured at: the decoder's section, the feature sequence, ..."""
  if image_shape[-1] == 3:  # pixels: the encoder's grid
    maps = model.encoder.compute_output_shape((1, *image_shape))
  else:  # cached features: the grid itself
    maps = (1, *image_shape)
  return {
    "features": list(model.neck.compute_output_shape(maps)[1:]),
    "input_shape": list(image_shape),
    "decoder": dict(config.model.decoder),
    "vocab_size": model.vocab_size,
    "max_caption_tokens": config.data.max_caption_length + 2,
    "batch_size": config.train.batch_size,
    "params": int(sum(np.prod(v.shape) for v in model.weights)),
  }
