"""Training: resuming, checkpoints, TensorBoard content, and bad configs.

The end-to-end learning test lives in test_learning.py.
"""

import glob
import json
import os
import signal

import keras
import numpy as np
import pytest

from captioning import checkpoints
from captioning import experiment
from captioning import train
from captioning import trainer
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
  "eval.evaluators": {"perplexity": {}},
  "train.warmup_steps": 5,
  "loss.doubly_stochastic_weight": 1.0,
  "data.bucket_length_multiple": 0,
}  # one batch shape: one trace of the train step


def interrupt_after(monkeypatch, num_calls):
  """Makes the process send itself SIGINT (Ctrl-C) at the end of train step call `num_calls`."""
  run_step, calls = trainer.TrainingRun.run_step, []

  def interruptible(self, batch):
    metrics = run_step(self, batch)
    calls.append(1)
    if len(calls) == num_calls:
      os.kill(os.getpid(), signal.SIGINT)
    return metrics

  monkeypatch.setattr(trainer.TrainingRun, "run_step", interruptible)


def test_interrupted_run_resumes_on_course(tmp_path, monkeypatch):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(helpers.load_config(**TINY), straight)
  with monkeypatch.context() as patch:
    interrupt_after(patch, 22)
    with pytest.raises(checkpoints.TrainingInterruptedError, match="SIGINT after step 22") as e:
      train.train_and_evaluate(helpers.load_config(**TINY), resumed)
  assert e.value.exit_code == 128 + signal.SIGINT
  # Training's own handler is gone: Ctrl-C raises KeyboardInterrupt again.
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  # The interruption saved a checkpoint of the step in flight when the signal came.
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
  # On course: the same data, schedule and dropout draws (keyed on seed and step) as the
  # uninterrupted run, so the same loss curve, well below where training began.
  base = helpers.read_scalars(os.path.join(straight, "tensorboard", "train"))["train/loss"]
  assert losses[40] < 0.8 * losses[5]
  for s in (30, 35, 40):  # (the window logged at 25 holds only the steps after the resume)
    assert losses[s] == pytest.approx(base[s], rel=1e-4), (s, losses[s], base[s])


def test_workdir_with_another_model_is_not_overwritten(tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(helpers.load_config(**dict(TINY, **{"train.num_steps": 5})), workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  other = helpers.load_config(**dict(TINY, **{"model.decoder.hidden_dim": 32}))
  with pytest.raises(ValueError, match=r"model\.decoder\.hidden_dim: 128 -> 32"):
    train.train_and_evaluate(other, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert experiment.load_config(workdir).model.decoder.hidden_dim == 128


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("train.batch_size", 0, r"train\.batch_size"),
    ("train.learning_rate", -1.0, r"train\.learning_rate"),
    ("train.strategy", "tpuv9", r"train\.strategy"),
    ("train.mixed_precision", "mixed_float8", r"train\.mixed_precision"),
    ("train.best_mode", "median", r"train\.best_mode must be one of \('max', 'min'\)"),
    ("eval.evaluators", {}, r"train\.best_metric 'perplexity' needs an evaluator"),
    ("train.profile_steps", "5", r"train\.profile_steps must be 'START,STOP'"),
    ("train.profile_steps", "5,3", r"train\.profile_steps must be 'START,STOP'"),
    ("train.profile_steps", "a,b", r"train\.profile_steps must be 'START,STOP'"),
    ("model.decoder.dropout", 1.5, r"config\.model\.decoder: dropout must be in"),
    ("model.decoder.hidden_dim", 0, r"config\.model\.decoder: hidden_dim must be"),
    ("model.neck.blocks", -1, r"config\.model\.neck: blocks must be"),
    ("model.neck.position_channels", "one_hot", r"init_moments needs config\.model\.neck"),
    ("model.encoder.name", "vgg", r"unknown config\.model\.encoder\.name 'vgg'"),
    ("model.encoder.strides", (2,), r"config\.model\.encoder: encoder strides"),
    ("model.decoder", {"name": "sat_lstm", "embed_dim": 8, "hidden_dim": 8}, "lacks attention"),
    ("model.decoder.num_layers", 1, r"config\.model\.decoder\.num_layers is not an argument"),
    ("data.image_size", 8, r"data\.image_size"),
    ("data.name", "imagenet21k", r"unknown config\.data\.name 'imagenet21k'"),
    ("data.annotations", "x.json", r"config\.data\.annotations is not an argument"),
    ("data.max_objects", 4, r"config\.data: min_objects and max_objects must be in"),
    ("loss.label_smoothing", 1.0, r"config\.loss: label_smoothing must be in"),
    ("loss.lambda", 1.0, r"config\.loss\.lambda is not an argument of CaptionLoss"),
    ("decode.method", "sampling", r"decode: method must be one of"),
    ("decode.beam_size", 0, r"decode: beam_size must be >= 1"),
    ("eval.evaluators", {"bleu5": {}}, r"unknown config\.eval\.evaluators 'bleu5'"),
    ("eval.evaluators.captions.metrics", ("Spice",), r"captions: Unknown metric"),
    ("eval.evaluators.relations.max_pair", 9, r"relations\.max_pair is not an argument"),
    ("eval.evaluators.captions.batch_size", 9, "is set by the code"),
    ("curriculum.steps", -5, r"curriculum\.steps"),
    ("curriculum.max_objects", -1, "min_objects and max_objects must satisfy"),
    ("curriculum.max_words", 3, r"config\.curriculum: min_words and max_words must"),
  ],
)
def test_bad_config_values_fail_early_with_the_key_named(tmp_path, key, value, message):
  config = helpers.load_config(**TINY)
  if key.startswith("eval.evaluators."):  # TINY runs only perplexity
    config.eval.evaluators = helpers.load_config().eval.evaluators
  *parents, field = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  with config.unlocked():
    node[field] = value
  # The workdir of an earlier run is left as it was: nothing is written before all is built.
  workdir = tmp_path / "w"
  workdir.mkdir()
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(workdir))
  assert not os.listdir(workdir)


def test_a_dataset_refuses_evaluators_it_has_no_ground_truth_for():
  from captioning import evaluators  # pylint: disable=import-outside-toplevel
  from captioning.data import datasets  # pylint: disable=import-outside-toplevel

  class CaptionsOnly(datasets.Dataset):
    pass

  evaluators.check({"captions": {}, "perplexity": {}}, CaptionsOnly)
  with pytest.raises(ValueError, match=r"evaluators\.relations does not apply to the dataset"):
    evaluators.check({"relations": {}}, CaptionsOnly)


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


def test_a_workdir_of_the_old_flat_config_is_refused_with_a_clear_message(tmp_path):
  workdir = tmp_path / "old"
  workdir.mkdir()
  config = json.loads(helpers.load_config(**TINY).to_json())
  config["model"] = {"encoder": "small_cnn", "hidden_dim": 256, "num_layers": 1}  # before
  (workdir / "config.json").write_text(json.dumps(config))
  (workdir / "keep.txt").write_text("results")
  for call in (
    lambda: experiment.restore(str(workdir)),
    lambda: train.train_and_evaluate(helpers.load_config(**TINY), str(workdir)),
  ):
    with pytest.raises(ValueError, match="does not fit this version of captioning"):
      call()
  assert sorted(os.listdir(workdir)) == ["config.json", "keep.txt"]


def test_a_workdir_older_than_the_added_keys_still_reads_with_their_old_behaviour(tmp_path):
  workdir = tmp_path / "older"
  workdir.mkdir()
  config = json.loads(helpers.load_config(**TINY).to_json())
  for section, keys in experiment.ADDED_KEYS.items():
    for key in keys:
      del config[section][key]
  (workdir / "config.json").write_text(json.dumps(config))
  loaded = experiment.load_config(str(workdir))
  assert loaded.train.grad_accumulation_steps == 1 and loaded.train.best_metric == ""


def test_profile_steps_write_a_trace_tensorboard_finds(tmp_path):
  config = helpers.load_config(**dict(TINY, **{"train.num_steps": 4, "train.profile_steps": "1,3"}))
  train.train_and_evaluate(config, str(tmp_path / "w"))
  # The profile plugin's layout: RUN/plugins/profile/SESSION/HOST.xplane.pb.
  traces = glob.glob(
    str(tmp_path / "w" / "tensorboard" / "train" / "plugins" / "profile" / "*" / "*")
  )
  assert [os.path.basename(t).endswith(".xplane.pb") for t in traces] == [True]
  assert os.path.getsize(traces[0]) > 0
