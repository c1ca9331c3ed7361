"""Checks a config before anything is built, so bad values fail with a clear message."""

from captioning import decoding
from captioning import evaluators

_STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
_PRECISIONS = (None, "mixed_bfloat16")


def _require(condition, message):
  if not condition:
    raise ValueError(f"Bad config: {message}")


def validate(config):
  """Raises ValueError naming the first config key whose value cannot work."""
  data, model, train, decode = config.data, config.model, config.train, config.decode
  _require(data.image_size >= 32, f"data.image_size must be >= 32, got {data.image_size}")
  _require(
    data.max_caption_length >= 1,
    f"data.max_caption_length must be >= 1, got {data.max_caption_length}",
  )
  _require(data.vocab_size > 4, f"data.vocab_size must be > 4, got {data.vocab_size}")
  _require(data.min_count >= 1, f"data.min_count must be >= 1, got {data.min_count}")
  for key in ("embed_dim", "hidden_dim", "attention_dim", "num_heads", "num_layers"):
    _require(model[key] >= 1, f"model.{key} must be >= 1, got {model[key]}")
  _require(0.0 <= model.dropout < 1.0, f"model.dropout must be in [0, 1), got {model.dropout}")
  _require(
    model.doubly_stochastic_weight >= 0.0,
    f"model.doubly_stochastic_weight must be >= 0, got {model.doubly_stochastic_weight}",
  )
  _require(train.batch_size >= 1, f"train.batch_size must be >= 1, got {train.batch_size}")
  _require(train.num_steps >= 1, f"train.num_steps must be >= 1, got {train.num_steps}")
  _require(train.learning_rate > 0, f"train.learning_rate must be > 0, got {train.learning_rate}")
  _require(train.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {train.warmup_steps}")
  _require(
    0.0 <= train.end_learning_rate_factor <= 1.0,
    f"train.end_learning_rate_factor must be in [0, 1], got {train.end_learning_rate_factor}",
  )
  _require(
    train.grad_clip_norm > 0, f"train.grad_clip_norm must be > 0, got {train.grad_clip_norm}"
  )
  _require(
    0.0 <= train.label_smoothing < 1.0,
    f"train.label_smoothing must be in [0, 1), got {train.label_smoothing}",
  )
  curriculum_steps = train.get("curriculum_steps", 0)
  _require(curriculum_steps >= 0, f"train.curriculum_steps must be >= 0, got {curriculum_steps}")
  if curriculum_steps:
    min_words = train.get("curriculum_min_words", 0)
    max_words = train.get("curriculum_max_words", 0)
    _require(
      max_words >= 1 and 0 <= min_words <= max_words,
      "train.curriculum_min_words and train.curriculum_max_words must satisfy "
      f"0 <= min <= max, max >= 1 when train.curriculum_steps > 0, got {min_words} and "
      f"{max_words}",
    )
  min_objects = train.get("curriculum_min_objects", 0)
  max_objects = train.get("curriculum_max_objects", 0)
  _require(
    0 <= min_objects <= max_objects or max_objects == 0 == min_objects,
    "train.curriculum_min_objects and train.curriculum_max_objects must satisfy "
    f"0 <= min <= max (max 0: any number), got {min_objects} and {max_objects}",
  )
  for key in ("log_every", "eval_every", "checkpoint_every", "max_checkpoints"):
    _require(train[key] >= 1, f"train.{key} must be >= 1, got {train[key]}")
  _require(
    train.strategy in _STRATEGIES,
    f"train.strategy must be one of {_STRATEGIES}, got {train.strategy!r}",
  )
  _require(
    train.mixed_precision in _PRECISIONS,
    f"train.mixed_precision must be one of {_PRECISIONS}, got {train.mixed_precision!r} "
    "(float16 needs loss scaling, which this trainer does not do yet)",
  )
  _require(
    decode.method in decoding.METHODS,
    f"decode.method must be one of {decoding.METHODS}, got {decode.method!r}",
  )
  _require(decode.beam_size >= 1, f"decode.beam_size must be >= 1, got {decode.beam_size}")
  _require(decode.max_length >= 1, f"decode.max_length must be >= 1, got {decode.max_length}")
  unknown = [e for e in config.eval.evaluators if e not in evaluators.names()]
  _require(
    not unknown, f"eval.evaluators has unknown names {unknown}; available: {evaluators.names()}"
  )
  _require(
    config.eval.batch_size >= 1, f"eval.batch_size must be >= 1, got {config.eval.batch_size}"
  )
