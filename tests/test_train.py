"""Training: resuming, checkpoints, TensorBoard content, and bad configs.

The end-to-end learning test lives in test_learning.py.
"""

import os

import keras
import numpy as np
import pytest

from captioning import experiment
from captioning import train
import helpers

TINY = {
  "train.num_steps": 40,
  "train.log_every": 5,
  "train.checkpoint_every": 20,
  "train.eval_every": 1000,
  "data.num_train": 600,
  "data.num_val": 20,
  "data.num_test": 20,
  "data.num_compositional": 20,
  "eval.num_examples": 20,
  "eval.evaluators": ("perplexity",),
  "train.warmup_steps": 5,
  "model.doubly_stochastic_weight": 1.0,
  "data.bucket_length_multiple": 0,
}  # one batch shape: one trace of the train step


def interrupt_after(monkeypatch, num_calls):
  """Makes the train step raise KeyboardInterrupt (like Ctrl-C) on call `num_calls` + 1."""
  make = train.make_train_step

  def make_interruptible(*args, **kwargs):
    step_fn, calls = make(*args, **kwargs), []

    def interruptible(batch):
      calls.append(1)
      if len(calls) > num_calls:
        raise KeyboardInterrupt
      return step_fn(batch)

    return interruptible

  monkeypatch.setattr(train, "make_train_step", make_interruptible)


def test_interrupted_run_resumes_on_course(tmp_path, monkeypatch):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(helpers.load_config(**TINY), straight)
  with monkeypatch.context() as patch:
    interrupt_after(patch, 22)
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(helpers.load_config(**TINY), resumed)
  # The interruption saved a checkpoint at the last finished step.
  assert "ckpt-22.index" in os.listdir(os.path.join(resumed, "checkpoints"))
  # Rerunning the same command picks up at step 22 and finishes.
  train.train_and_evaluate(helpers.load_config(**TINY), resumed)
  losses = helpers.read_scalars(os.path.join(resumed, "tensorboard", "train"))["train/loss"]
  assert sorted(losses) == list(range(5, 45, 5))  # each logged once: 5..20, then 25..40
  _, _, model, step = experiment.restore(resumed)
  assert step == 40
  # The restored weights are the trained ones: they match the final model.keras exactly.
  final = keras.saving.load_model(os.path.join(resumed, "model.keras"))
  batch = {"image": np.full([2, 32, 32, 3], 100, np.uint8), "tokens": np.ones([2, 4], np.int32)}
  np.testing.assert_array_equal(model(batch)["logits"].numpy(), final(batch)["logits"].numpy())
  # On course: same data and schedule as the uninterrupted run, so the same loss curve (up to
  # dropout noise), far below where training began.
  base = helpers.read_scalars(os.path.join(straight, "tensorboard", "train"))["train/loss"]
  assert losses[40] < 0.7 * losses[5]
  for s in (25, 30, 35, 40):
    assert abs(losses[s] - base[s]) < 0.1 * base[s], (s, losses[s], base[s])


def test_workdir_with_another_model_is_not_overwritten(tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(helpers.load_config(**dict(TINY, **{"train.num_steps": 5})), workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  other = helpers.load_config(**dict(TINY, **{"model.hidden_dim": 32}))
  with pytest.raises(ValueError, match=r"model\.hidden_dim"):
    train.train_and_evaluate(other, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert experiment.load_config(workdir).model.hidden_dim != 32


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("train.batch_size", 0, "train.batch_size"),
    ("train.learning_rate", -1.0, "train.learning_rate"),
    ("train.strategy", "tpuv9", "train.strategy"),
    ("train.mixed_precision", "mixed_float8", "train.mixed_precision"),
    ("model.dropout", 1.5, "model.dropout"),
    ("data.image_size", 8, "data.image_size"),
    ("data.name", "imagenet21k", "Unknown dataset"),
    ("decode.method", "sampling", "decode.method"),
    ("eval.evaluators", ("bleu5",), "eval.evaluators"),
    ("train.curriculum_steps", -5, "train.curriculum_steps"),
    ("train.curriculum_max_objects", -1, "train.curriculum_max_objects"),
    ("decode.beam_size", 0, "decode.beam_size"),
  ],
)
def test_bad_config_values_fail_early_with_the_key_named(tmp_path, key, value, message):
  config = helpers.load_config(**TINY)
  config[key.split(".")[0]][key.split(".")[1]] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(str(tmp_path / "w" / "checkpoints"))


def test_config_typos_fail_loudly():
  config = helpers.load_config()
  with pytest.raises(AttributeError):
    config.train.num_stpes = 3


def test_learning_rate_schedule_warms_up_then_decays():
  config = helpers.load_config(
    **{
      "train.num_steps": 100,
      "train.warmup_steps": 10,
      "train.learning_rate": 1.0,
      "train.end_learning_rate_factor": 0.1,
    }
  )
  schedule = experiment.learning_rate_schedule(config.train)
  values = np.array([float(schedule(s)) for s in range(0, 101, 5)])
  assert values[0] == 0.0 and values[2] == pytest.approx(1.0)
  assert np.all(np.diff(values[2:]) <= 1e-7) and values[-1] == pytest.approx(0.1, abs=1e-3)


def test_mixed_bfloat16_trains_a_step(tmp_path):
  config = helpers.load_config(
    **dict(TINY, **{"train.num_steps": 2, "train.mixed_precision": "mixed_bfloat16"})
  )
  train.train_and_evaluate(config, str(tmp_path / "w"))
  scalars = helpers.read_scalars(str(tmp_path / "w" / "tensorboard" / "train"))
  assert np.isfinite(scalars["train/loss"][2])
