"""A self-contained workdir: config, tokenizer and checkpoints saved and read back together.

Layout:
  WORKDIR/config.json        the config the model was trained with
  WORKDIR/tokenizer.json     the vocabulary
  WORKDIR/provenance.json    per (re)start of training: code revision, versions, process settings
  WORKDIR/checkpoints/       tf.train.CheckpointManager files (model, optimizer, step)
  WORKDIR/checkpoints/best/  the best evaluation's checkpoint and best.json (train.best_metric)
  WORKDIR/tensorboard/       train and eval summary writers
  WORKDIR/model.keras        the final model, loadable with keras.saving.load_model
  WORKDIR/eval/SPLIT/        the result files of `scripts/evaluate.py`
"""

import datetime
import json
import os

import keras
import ml_collections
import tensorflow as tf

from captioning import config_checks
from captioning import files
from captioning import optimizers as optimizers_lib
from captioning import runtime
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


def best_checkpoint_dir(workdir):
  return os.path.join(checkpoint_dir(workdir), "best")


def _flatten(tree, prefix=""):
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_diffs(old, new, sections=None):
  """The differences between two nested dicts of config values, one "key: old -> new" line
  per dotted key (only keys under the top-level `sections`, when given)."""
  old, new = _flatten(old), _flatten(new)
  return [
    f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
    for key in sorted(set(old) | set(new))
    if (sections is None or key.split(".")[0] in sections) and old.get(key) != new.get(key)
  ]


# Config keys added after the current layout, with the value that keeps an older workdir's
# behaviour, so its config still reads (evaluation, captioning, export and resume).
ADDED_KEYS = {
  "train": {
    "grad_accumulation_steps": 1,
    "max_consecutive_skips": 5,
    "best_metric": "",
    "best_mode": "max",
    "profile_steps": "",
    "deterministic": False,
  },
}


def load_config(workdir):
  """Reads the config a workdir was trained with, as a locked ConfigDict.

  Raises:
    FileNotFoundError: `workdir` is not a training workdir.
    ValueError: its config does not fit this version of the code (e.g. a workdir written
      before the config sections were reorganised); its files are left untouched.
  """
  path = config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} not found: {workdir!r} is not a training workdir "
      "(train with scripts/train.py --workdir=... first)."
    )
  with open(path) as f:
    values = json.load(f)
  for section, keys in ADDED_KEYS.items():  # what a workdir older than these keys trained with
    for key, value in keys.items():
      values.get(section, {}).setdefault(key, value)
  config = ml_collections.ConfigDict(values)
  config.lock()
  try:
    config_checks.validate(config)
  except (ValueError, AttributeError, KeyError, TypeError) as error:
    raise ValueError(
      f"{path} does not fit this version of captioning ({error}). Workdirs written before the "
      "config layout of configs/shapes_sat.py (model.encoder / neck / decoder sections) "
      "cannot be read; train again in a new --workdir."
    ) from error
  return config


def check_workdir(config, workdir):
  """Checks, without writing, that `config` may train in `workdir`.

  Raises:
    ValueError: the workdir holds a different data or model config, which would make resuming
      mix two experiments (its files are left untouched).
  """
  if not os.path.exists(config_path(workdir)):
    return
  diffs = config_diffs(
    json.loads(load_config(workdir).to_json()), json.loads(config.to_json()), _FROZEN_SECTIONS
  )
  if diffs:
    raise ValueError(
      f"Workdir {workdir} was trained with a different config; refusing to resume from it. "
      f"Use a new --workdir. Differences: {'; '.join(diffs)}"
    )


def save_workdir(config, tokenizer, workdir, start_step):
  """Writes config.json and tokenizer.json, and appends this start to provenance.json."""
  os.makedirs(workdir, exist_ok=True)
  files.write_text(config_path(workdir), config.to_json(indent=2, sort_keys=True))
  if not os.path.exists(tokenizer_path(workdir)):
    tokenizer.save(tokenizer_path(workdir))
  path = os.path.join(workdir, "provenance.json")
  runs = []
  if os.path.exists(path):
    with open(path) as f:
      runs = json.load(f)
  runs.append(
    {
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "start_step": int(start_step),
      **runtime.provenance(),
    }
  )
  files.write_json(path, runs)


def load_or_build_tokenizer(workdir, train_split, data_config):
  """Reads the workdir's tokenizer, or builds one from the training captions (not saved here)."""
  path = tokenizer_path(workdir)
  if os.path.exists(path):
    return tokenizer_lib.Tokenizer.load(path)
  return tokenizer_lib.Tokenizer.build(
    (c for caps in train_split.captions for c in caps),
    vocab_size=data_config.vocab_size,
    min_count=data_config.min_count,
  )


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
  """The optimizer a config trains with: AdamW (fused, `optimizers.FusedAdamW`) on
  `learning_rate_schedule`."""
  return optimizers_lib.FusedAdamW(
    learning_rate_schedule(train_config), weight_decay=train_config.weight_decay
  )


def build_optimizers(config, model):
  """The optimizers of a run, each built over the variables it trains: {name: (optimizer,
  variables)}.

  "optimizer" trains the captioner (everything but a pretrained backbone); under
  mixed_float16 it is a `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling). With
  `config.train.fine_tune.layers` > 0, "backbone_optimizer" (AdamW at `fine_tune.learning_rate`,
  constant) trains the backbone's top layers from `fine_tune.start_step` on. Both are built over
  their variables from step 0, so a checkpoint has the same structure before and after the
  switch. (Scaling the backbone's gradients instead would do nothing under Adam.)
  """
  fine_tune = config.train.fine_tune
  tuned = []
  if fine_tune.layers:
    if not hasattr(model.encoder, "fine_tune_variables"):
      raise ValueError(
        f"Bad config: config.train.fine_tune.layers needs a pretrained backbone; "
        f"config.model.encoder.name is {config.model.encoder.name!r}"
      )
    tuned = model.encoder.fine_tune_variables(fine_tune.layers)
  tuned_ids = {id(v) for v in tuned}
  head = [v for v in model.trainable_variables if id(v) not in tuned_ids]
  optimizer = build_optimizer(config.train)
  if config.train.mixed_precision == "mixed_float16":  # float16 gradients need loss scaling
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  optimizers = {"optimizer": (optimizer, head)}
  if tuned:
    backbone = optimizers_lib.FusedAdamW(
      fine_tune.learning_rate, weight_decay=config.train.weight_decay
    )
    optimizers["backbone_optimizer"] = (backbone, tuned)
  for optimizer, variables in optimizers.values():
    optimizer.build(variables)
  return optimizers


def training_checkpoint(model, optimizers, step):
  """The one checkpoint structure of a workdir, for saving and for every restore.

  Keras 3 variables saved with an optimizer are keyed under the optimizer's variable list, and a
  checkpoint object without the optimizer silently fails to restore them (measured: a
  model-only restore reports every object matched and restores nothing), so restores use the
  full structure too.

  Args:
    model: the Captioner.
    optimizers: `build_optimizers`' result.
    step: the step counter variable.
  """
  return tf.train.Checkpoint(
    model=model, step=step, **{name: opt for name, (opt, _) in optimizers.items()}
  )


def _read(model, source_config, checkpoint):
  """Reads a checkpoint written with `source_config` into `model`; returns the step."""
  step = tf.Variable(0, dtype=tf.int64)
  optimizers = build_optimizers(source_config, model)
  status = training_checkpoint(model, optimizers, step).read(checkpoint)
  status.assert_existing_objects_matched().expect_partial()
  return int(step.numpy())


def init_weights_from(model, source):
  """Starts `model`'s weights (not the optimizer or step) from another run.

  Args:
    model: a built Captioner of the same architecture as the source's.
    source: a training workdir (its latest checkpoint) or a checkpoint path in one
      (WORKDIR/checkpoints/ckpt-N).

  Returns:
    The checkpoint read.
  """
  source = os.path.expanduser(source)
  if os.path.isdir(source):
    workdir, checkpoint = source, tf.train.latest_checkpoint(checkpoint_dir(source))
  else:
    workdir, checkpoint = os.path.dirname(os.path.dirname(source)), source
  if checkpoint is None or not tf.io.gfile.exists(checkpoint + ".index"):
    raise ValueError(f"Bad config: config.train.init_from: no checkpoint at {source!r}")
  try:
    _read(model, load_config(workdir), checkpoint)
  except (AssertionError, ValueError) as error:
    raise ValueError(
      f"Bad config: config.train.init_from: {checkpoint} does not fit this model ({error})"
    ) from error
  return checkpoint


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
  # Keras optimizers checkpoint their variables by list position, so the optimizers must be
  # built exactly as in training for the model's variables to line up.
  return config, tokenizer, model, _read(model, config, checkpoint)
