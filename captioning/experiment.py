"""A self-contained workdir: config, tokenizer and checkpoints saved and read back together.

Layout:
  WORKDIR/config.json        the config the model was trained with
  WORKDIR/tokenizer.json     the vocabulary
  WORKDIR/checkpoints/       tf.train.CheckpointManager files (model, optimizer, step)
  WORKDIR/tensorboard/       train and eval summary writers
  WORKDIR/model.keras        the final model, loadable with keras.saving.load_model
  WORKDIR/eval/SPLIT/        captions.json and metrics.json of `scripts/evaluate.py`
"""

import json
import os

import keras
import ml_collections
import tensorflow as tf

from captioning.data import tokenizer as tokenizer_lib
from captioning.models import captioner

# Sections whose values decide the model's variables or the data it was fitted to: a workdir
# cannot be resumed with different values without mixing two experiments.
_FROZEN_SECTIONS = ("data", "model")


def config_path(workdir):
  return os.path.join(workdir, "config.json")


def tokenizer_path(workdir):
  return os.path.join(workdir, "tokenizer.json")


def checkpoint_dir(workdir):
  return os.path.join(workdir, "checkpoints")


def _to_plain(config):
  return json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)


def save_config(config, workdir):
  """Writes config.json atomically."""
  path = config_path(workdir)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json(indent=2, sort_keys=True))
  os.replace(path + ".tmp", path)


def load_config(workdir):
  """Reads the config a workdir was trained with, as a locked ConfigDict."""
  path = config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} not found: {workdir!r} is not a training workdir "
      "(train with scripts/train.py --workdir=... first)."
    )
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.lock()
  return config


def prepare_workdir(config, workdir):
  """Creates the workdir, or checks that a previous run in it trained the same experiment.

  Raises:
    ValueError: the workdir holds a different data or model config, which would make resuming
      mix two experiments (its checkpoints are left untouched).
  """
  os.makedirs(workdir, exist_ok=True)
  if os.path.exists(config_path(workdir)):
    old, new = _to_plain(load_config(workdir)), _to_plain(config)
    diffs = [
      f"{section}.{key}: {old.get(section, {}).get(key)!r} -> {value!r}"
      for section in _FROZEN_SECTIONS
      for key, value in new.get(section, {}).items()
      if old.get(section, {}).get(key) != value
    ]
    if diffs:
      raise ValueError(
        f"Workdir {workdir} was trained with a different config; refusing to "
        f"resume from it. Use a new --workdir. Differences: {'; '.join(diffs)}"
      )
  save_config(config, workdir)


def load_or_build_tokenizer(workdir, train_split, data_config):
  """Reads the workdir's tokenizer, or builds it from the training captions and saves it."""
  path = tokenizer_path(workdir)
  if os.path.exists(path):
    return tokenizer_lib.Tokenizer.load(path)
  tokenizer = tokenizer_lib.Tokenizer.build(
    (c for caps in train_split.captions for c in caps),
    vocab_size=data_config.vocab_size,
    min_count=data_config.min_count,
  )
  tokenizer.save(path)
  return tokenizer


def build_model(config, vocab_size, output_bias=None):
  """Builds (and creates the variables of) the captioner a config describes."""
  model = captioner.build_captioner(
    config.model, vocab_size, output_bias=output_bias, dtype=config.train.mixed_precision
  )
  size = config.data.image_size
  model.build({"image": (None, size, size, 3), "tokens": (None, None)})
  return model


def learning_rate_schedule(train_config):
  """Linear warmup to `learning_rate`, then cosine decay to `lr * end_learning_rate_factor`."""
  warmup = min(train_config.warmup_steps, max(train_config.num_steps - 1, 0))
  return keras.optimizers.schedules.CosineDecay(
    initial_learning_rate=0.0 if warmup else train_config.learning_rate,
    decay_steps=max(train_config.num_steps - warmup, 1),
    alpha=train_config.end_learning_rate_factor,
    warmup_target=train_config.learning_rate if warmup else None,
    warmup_steps=warmup,
  )


def build_optimizer(train_config):
  """The optimizer a config trains with: AdamW on `learning_rate_schedule`."""
  return keras.optimizers.AdamW(
    learning_rate_schedule(train_config), weight_decay=train_config.weight_decay
  )


def training_checkpoint(model, optimizer, step):
  """The one checkpoint structure of a workdir, for saving and for every restore.

  Keras 3 variables saved with an optimizer are keyed under the optimizer's variable list, and a
  checkpoint object without the optimizer silently fails to restore them, so restores use the
  full structure too.
  """
  return tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)


def restore(workdir, checkpoint=None):
  """Loads what evaluation and inference need from a training workdir.

  Args:
    workdir: a directory written by `train.train_and_evaluate`.
    checkpoint: a checkpoint path; the latest one when None.

  Returns:
    (config, tokenizer, model, step).
  """
  config = load_config(workdir)
  tokenizer = tokenizer_lib.Tokenizer.load(tokenizer_path(workdir))
  model = build_model(config, tokenizer.vocab_size)
  checkpoint = checkpoint or tf.train.latest_checkpoint(checkpoint_dir(workdir))
  if checkpoint is None:
    raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(workdir)}: train first.")
  step = tf.Variable(0, dtype=tf.int64)
  # Keras optimizers checkpoint their variables by list position, so the optimizer must be
  # built exactly as in training for the model's variables to line up.
  optimizer = build_optimizer(config.train)
  optimizer.build(model.trainable_variables)
  status = training_checkpoint(model, optimizer, step).read(checkpoint)
  status.assert_existing_objects_matched().expect_partial()
  return config, tokenizer, model, int(step.numpy())
