"""Checks a whole config before anything is built or written, so a bad value fails at once with
the config key named.

Each section is checked against the code it reaches: the keys of `config.model.decoder` against
the decoder's constructor, each evaluator's settings against the evaluator, and so on. Values
the constructors check themselves fail when the model is built, still before the workdir is
written.
"""

from captioning import checkpoints
from captioning import decode_options
from captioning import decoding
from captioning import evaluators
from captioning import losses
from captioning import registry
from captioning.data import datasets
from captioning.models import captioner
from captioning.models import decoders
from captioning.models import encoders
from captioning.models import neck

SECTIONS = ("seed", "data", "model", "loss", "curriculum", "train", "decode", "eval")
TRAIN_KEYS = (
  "batch_size",
  "num_steps",
  "learning_rate",
  "warmup_steps",
  "end_learning_rate_factor",
  "weight_decay",
  "grad_clip_norm",
  "grad_accumulation_steps",
  "max_consecutive_skips",
  "log_every",
  "eval_every",
  "checkpoint_every",
  "max_checkpoints",
  "best_metric",
  "best_mode",
  "profile_steps",
  "strategy",
  "mixed_precision",
  "jit_compile",
  "deterministic",
  "fine_tune",
  "init_from",
)
FINE_TUNE_KEYS = ("layers", "start_step", "learning_rate")
EVAL_KEYS = ("num_examples", "batch_size", "evaluators")
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
PRECISIONS = (None, "mixed_bfloat16", "mixed_float16")


def _require(condition, message):
  if not condition:
    raise ValueError(f"Bad config: {message}")


def profile_steps(value):
  """Parses `train.profile_steps`: None for "", else (START, STOP), two ints 0 <= START < STOP.

  Raises:
    ValueError: any other value.
  """
  if value == "":
    return None
  parts = value.split(",") if isinstance(value, str) else []
  try:
    start, stop = (int(p) for p in parts)
  except ValueError:
    start, stop = -1, -1  # the message below
  _require(
    0 <= start < stop,
    f"train.profile_steps must be 'START,STOP' with 0 <= START < STOP ('' for none), got {value!r}",
  )
  return start, stop


def _same_keys(section, expected, where):
  keys = set(section.keys())
  unknown, missing = sorted(keys - set(expected)), sorted(set(expected) - keys)
  _require(not unknown, f"{where} has keys no code reads: {unknown}")
  _require(not missing, f"{where} lacks {missing}")


def validate(config):
  """Raises ValueError naming the first config key whose value cannot work."""
  _same_keys(config, SECTIONS, "config")
  data, model, train, decode = config.data, config.model, config.train, config.decode
  _require(data.image_size >= 32, f"data.image_size must be >= 32, got {data.image_size}")
  _require(
    data.max_caption_length >= 1,
    f"data.max_caption_length must be >= 1, got {data.max_caption_length}",
  )
  _require(data.vocab_size > 4, f"data.vocab_size must be > 4, got {data.vocab_size}")
  _require(data.min_count >= 1, f"data.min_count must be >= 1, got {data.min_count}")
  _require(
    data.bucket_length_multiple >= 0,
    f"data.bucket_length_multiple must be >= 0, got {data.bucket_length_multiple}",
  )
  dataset_cls = datasets.check(data)

  registry.check_section(
    captioner.Captioner, model, "config.model", provided=("vocab_size", "output_bias")
  )
  encoders.ENCODERS.check(model.encoder, "config.model.encoder")
  registry.check_section(neck.Neck, model.neck, "config.model.neck")
  decoders.DECODERS.check(
    model.decoder, "config.model.decoder", provided=("vocab_size", "output_bias")
  )
  registry.check_section(losses.CaptionLoss, config.loss, "config.loss")

  curriculum = dict(config.curriculum)
  _require("steps" in curriculum, "config.curriculum lacks steps")
  steps = curriculum.pop("steps")
  _require(steps >= 0, f"curriculum.steps must be >= 0, got {steps}")
  registry.check_section(
    dataset_cls.curriculum_pairs, curriculum, "config.curriculum", provided=("split", "words")
  )

  _same_keys(train, TRAIN_KEYS, "config.train")
  for key in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every"):
    _require(train[key] >= 1, f"train.{key} must be >= 1, got {train[key]}")
  _require(
    train.max_checkpoints >= 1, f"train.max_checkpoints must be >= 1, got {train.max_checkpoints}"
  )
  _require(
    train.best_mode in checkpoints.BEST_MODES,
    f"train.best_mode must be one of {checkpoints.BEST_MODES}, got {train.best_mode!r}",
  )
  _require(
    isinstance(train.best_metric, str),
    f"train.best_metric must be a metric's name ('' for none), got {train.best_metric!r}",
  )
  _require(
    not train.best_metric or config.eval.evaluators,
    f"train.best_metric {train.best_metric!r} needs an evaluator that reports it, and "
    "config.eval.evaluators is empty (train.best_metric='' keeps no best checkpoint)",
  )
  profile_steps(train.profile_steps)
  _require(train.learning_rate > 0, f"train.learning_rate must be > 0, got {train.learning_rate}")
  _require(train.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {train.warmup_steps}")
  _require(
    0.0 <= train.end_learning_rate_factor <= 1.0,
    f"train.end_learning_rate_factor must be in [0, 1], got {train.end_learning_rate_factor}",
  )
  _require(train.weight_decay >= 0, f"train.weight_decay must be >= 0, got {train.weight_decay}")
  _require(
    train.grad_clip_norm > 0, f"train.grad_clip_norm must be > 0, got {train.grad_clip_norm}"
  )
  for key in ("grad_accumulation_steps", "max_consecutive_skips"):
    _require(train[key] >= 1, f"train.{key} must be >= 1, got {train[key]}")
  _require(
    train.batch_size % train.grad_accumulation_steps == 0,
    f"train.batch_size {train.batch_size} must be a multiple of train.grad_accumulation_steps "
    f"{train.grad_accumulation_steps}",
  )
  _same_keys(train.fine_tune, FINE_TUNE_KEYS, "config.train.fine_tune")
  for key in ("layers", "start_step"):
    value = train.fine_tune[key]
    _require(value >= 0, f"train.fine_tune.{key} must be >= 0, got {value}")
  _require(
    train.fine_tune.learning_rate > 0,
    f"train.fine_tune.learning_rate must be > 0, got {train.fine_tune.learning_rate}",
  )
  _require(
    not (data.features and train.fine_tune.layers),
    "data.features (a cache of the frozen backbone) and train.fine_tune.layers > 0 (a "
    "backbone that changes) exclude each other",
  )
  _require(
    isinstance(train.init_from, str),
    f"train.init_from must be a workdir or checkpoint path ('' for none), got {train.init_from!r}",
  )
  _require(
    train.strategy in STRATEGIES,
    f"train.strategy must be one of {STRATEGIES}, got {train.strategy!r}",
  )
  _require(
    train.mixed_precision in PRECISIONS,
    f"train.mixed_precision must be one of {PRECISIONS}, got {train.mixed_precision!r}",
  )

  registry.check_section(
    decoding.Search, decode, "config.decode", provided=("model", "tokenizer", "jit_compile")
  )
  try:
    decode_options.check_options(**decode)
  except ValueError as error:
    raise ValueError(f"Bad config: config.decode: {error}") from error

  _same_keys(config.eval, EVAL_KEYS, "config.eval")
  _require(
    config.eval.num_examples is None or config.eval.num_examples >= 1,
    f"eval.num_examples must be >= 1 (or None for all), got {config.eval.num_examples}",
  )
  _require(
    config.eval.batch_size >= 1, f"eval.batch_size must be >= 1, got {config.eval.batch_size}"
  )
  evaluators.check(config.eval.evaluators, dataset_cls)
