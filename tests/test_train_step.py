"""The train step (captioning/train_step.py): the update of the global batch whatever the number
of replicas or micro-batches, every token weighing the same, clipping on the global gradient,
non-finite updates skipped, float16 loss scaling.

The MirroredStrategy comparison runs in a subprocess: logical devices must be configured before
TensorFlow initialises, which the rest of the suite has already done in this process.
"""

import os
import types

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from captioning import losses
from captioning import optimizers
from captioning import train_step
from captioning import trainer
import helpers

PAD = 0


def batch(size=8, seed=0):
  """Images and captions of different lengths (so replicas and micro-batches hold different
  numbers of tokens)."""
  rng = np.random.RandomState(seed)
  tokens = rng.randint(3, 20, (size, 8)).astype(np.int32)
  tokens[:, 0] = 1
  for row, length in enumerate(rng.randint(2, 8, size)):
    tokens[row, length] = 2
    tokens[row, length + 1 :] = PAD
  return {"image": rng.randint(0, 255, (size, 32, 32, 3)).astype(np.uint8), "tokens": tokens}


class PoisonedLoss(losses.CaptionLoss):
  """A CaptionLoss whose sums turn NaN while `poison` is True (a numerical fault on demand)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.poison = tf.Variable(False, trainable=False)

  def sums(self, targets, outputs, mask):
    sums = super().sums(targets, outputs, mask)
    sums["cross_entropy"] += tf.where(self.poison, np.nan, 0.0)
    return sums


def make(model, clip=5.0, micro_batches=1, strategy=None, loss=None):
  """(train step, optimizer) over a model, with a fresh AdamW (fused, as training builds)."""
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    optimizer = optimizers.FusedAdamW(1e-2)
    optimizer.build(model.trainable_variables)
  config = ml_collections.ConfigDict(
    {"grad_clip_norm": clip, "grad_accumulation_steps": micro_batches, "jit_compile": False}
  )
  loss = loss or losses.CaptionLoss(doubly_stochastic_weight=0.5)
  step = train_step.make_train_step(
    model, {"optimizer": (optimizer, model.trainable_variables)}, loss, strategy, PAD, config
  )
  return step, optimizer


def fresh_model(initial=None):
  tf.keras.utils.set_random_seed(0)
  model = helpers.tiny_captioner(20)
  if initial is not None:
    for v, value in zip(model.weights, initial):
      v.assign(value)
  return model


def test_micro_batches_give_the_update_of_the_whole_batch_with_every_token_weighing_the_same():
  initial = [v.numpy() for v in fresh_model().weights]
  data = batch()
  results = []
  for micro_batches in (1, 4):
    model = fresh_model(initial)
    step, _ = make(model, clip=0.05, micro_batches=micro_batches)  # clipping active
    metrics = {k: float(v) for k, v in step(data).items()}
    results.append((metrics, [v.numpy() for v in model.trainable_variables]))
  (whole, weights), others = results[0], results[1:]
  assert whole["grad_norm"] > 0.05  # the clip acted
  # The loss is the mean over every token of the batch, not a mean of per-piece means.
  model = fresh_model(initial)
  tokens = data["tokens"]
  logits = model({"image": data["image"], "tokens": tokens[:, :-1]})["logits"]
  mask = tokens[:, 1:] != PAD
  per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(tokens[:, 1:], logits).numpy()
  assert whole["cross_entropy"] == pytest.approx(per_token[mask].mean(), rel=1e-5)
  for metrics, more_weights in others:
    for key in ("loss", "cross_entropy", "attention_penalty", "grad_norm"):
      assert metrics[key] == pytest.approx(whole[key], rel=1e-4), key
    for a, b in zip(more_weights, weights):
      np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_non_finite_loss_skips_the_update_and_is_counted():
  model = fresh_model()
  loss = PoisonedLoss()
  step, optimizer = make(model, loss=loss)
  assert float(step(batch())["skipped_nonfinite"]) == 0.0
  before = [v.numpy() for v in model.trainable_variables + optimizer.variables]
  loss.poison.assign(True)
  metrics = step(batch(seed=1))
  assert float(metrics["skipped_nonfinite"]) == 1.0
  assert float(metrics["loss_scale_overflow"]) == 0.0
  after = [v.numpy() for v in model.trainable_variables + optimizer.variables]
  for a, b in zip(before, after):  # weights, Adam moments and iteration count untouched
    np.testing.assert_array_equal(a, b)
  loss.poison.assign(False)
  assert float(step(batch(seed=2))["skipped_nonfinite"]) == 0.0
  assert int(optimizer.iterations) == 2


class FakeStep:
  """A train step that reports the given skips, traced once."""

  def __init__(self, skips):
    self.skips = skips

  def __call__(self, batch, tune_backbone):
    return {"skipped_nonfinite": next(self.skips)}

  def compilations(self):
    return 1


def test_training_stops_after_k_skipped_updates_in_a_row():
  skips = iter([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
  run = types.SimpleNamespace(
    train_step=FakeStep(skips),
    compilations=1,
    tune_backbone=lambda step: False,
    step=tf.Variable(7),
    config=ml_collections.ConfigDict({"train": {"max_consecutive_skips": 3}}),
    manager=types.SimpleNamespace(latest_checkpoint="w/checkpoints/ckpt-5"),
    consecutive_skips=0,
  )
  for _ in range(5):  # two, a good step resets the count, two more
    trainer.TrainingRun.run_step(run, None)
  with pytest.raises(FloatingPointError, match=r"3 updates in a row skipped .*ckpt-5"):
    trainer.TrainingRun.run_step(run, None)


SMALL = {
  "data.bucket_length_multiple": 0,  # one batch shape: one trace (one XLA compilation)
  "train.batch_size": 8,
  "data.num_train": 64,
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "eval.evaluators": {},
  "train.best_metric": "",
}


def test_float16_loss_scale_overflows_are_counted_apart_and_the_scale_moves(tmp_path):
  config = helpers.load_config("smoke", **{**SMALL, "train.mixed_precision": "mixed_float16"})
  run = trainer.TrainingRun.create(config, str(tmp_path / "w"))
  scaler = run.optimizer
  assert isinstance(scaler, keras.optimizers.LossScaleOptimizer)
  scaler.dynamic_scale.assign(2.0**24)  # float16 gradients overflow at this scale
  batches, overflows, skipped = run.batches(), 0, 0
  for _ in range(8):
    metrics = run.run_step(next(batches))
    run.step.assign_add(1)
    overflows += float(metrics["loss_scale_overflow"])
    skipped += float(metrics["skipped_nonfinite"])
  assert overflows >= 1 and skipped == 0
  assert float(scaler.dynamic_scale) < 2.0**24
  assert 0 < int(scaler.inner_optimizer.iterations) == 8 - overflows
  path = str(tmp_path / "model.keras")
  run.model.save(path)
  assert keras.saving.load_model(path).dtype_policy.name == "mixed_float16"


@pytest.mark.parametrize("precision,jit_compile", [("mixed_bfloat16", False), (None, True)])
def test_bfloat16_and_xla_train_and_save_with_their_policy(tmp_path, precision, jit_compile):
  config = helpers.load_config("smoke", **{**SMALL, "train.mixed_precision": precision,
                                           "train.jit_compile": jit_compile})  # fmt: skip
  run = trainer.TrainingRun.create(config, str(tmp_path / "w"))
  batches, losses_seen = run.batches(), []
  for _ in range(4):
    losses_seen.append(float(run.run_step(next(batches))["loss"]))
    run.step.assign_add(1)
  assert np.all(np.isfinite(losses_seen)) and int(run.optimizer.iterations) == 4
  assert run.compilations == 1  # one batch shape
  path = str(tmp_path / "model.keras")
  run.model.save(path)
  assert keras.saving.load_model(path).dtype_policy.name == (precision or "float32")


# One step on the same global batch and weights under one device and under MirroredStrategy
# over two logical CPU devices (each replica half the batch), clipping active; then a NaN.
_MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import test_train_step as t

data = t.batch()
initial = [v.numpy() for v in t.fresh_model().weights]
results = {}
for name in ("one", "mirrored"):
  strategy = tf.distribute.get_strategy()
  if name == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  with strategy.scope():
    model = t.fresh_model(initial)
  loss = t.PoisonedLoss(doubly_stochastic_weight=0.5)
  step, optimizer = t.make(model, clip=0.05, strategy=strategy, loss=loss)
  replicas = strategy.num_replicas_in_sync
  half = len(data["tokens"]) // replicas
  inputs = strategy.experimental_distribute_values_from_function(
    lambda ctx: {k: v[ctx.replica_id_in_sync_group * half:][:half] for k, v in data.items()})
  metrics = {k: float(v) for k, v in step(inputs).items()}
  weights = [v.numpy() for v in model.trainable_variables]
  loss.poison.assign(True)
  skipped = float(step(inputs)["skipped_nonfinite"])
  unchanged = all(np.array_equal(a, v.numpy()) for a, v in zip(weights, model.trainable_variables))
  results[name] = {"replicas": replicas, "metrics": metrics, "skipped": skipped,
                   "unchanged": unchanged, "iterations": int(optimizer.iterations.value.numpy()),
                   "weights": [w.tolist() for w in weights]}
print(json.dumps(results))
"""


def test_mirrored_strategy_matches_one_device_on_the_global_batch():
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  out = helpers.run_json_script(_MIRRORED, tests_dir)
  one, mirrored = out["one"], out["mirrored"]
  assert (one["replicas"], mirrored["replicas"]) == (1, 2)
  assert one["metrics"]["grad_norm"] > 0.05  # the clip acted, on the global gradient
  for key in ("loss", "cross_entropy", "attention_penalty", "grad_norm"):
    assert mirrored["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4), key
  for a, b in zip(mirrored["weights"], one["weights"]):
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)  # float32 sums' order
  for run in (one, mirrored):  # the NaN step is skipped under both
    assert run["skipped"] == 1.0 and run["unchanged"] and run["iterations"] == 1


def test_the_update_is_the_gradient_scaled_down_to_the_clip_norm():
  """With plain SGD (learning rate 1) the update is -g without clipping, and -g c / |g| when
  the global norm |g| exceeds the clip norm c."""
  initial = [v.numpy() for v in fresh_model().weights]
  updates = {}
  for clip in (1e9, 0.05):
    model = fresh_model(initial)
    optimizer = keras.optimizers.SGD(1.0)
    optimizer.build(model.trainable_variables)
    config = ml_collections.ConfigDict(
      {"grad_clip_norm": clip, "grad_accumulation_steps": 1, "jit_compile": False}
    )
    step = train_step.make_train_step(
      model,
      {"optimizer": (optimizer, model.trainable_variables)},
      losses.CaptionLoss(),
      tf.distribute.get_strategy(),
      PAD,
      config,
    )
    before = [v.numpy() for v in model.trainable_variables]
    metrics = step(batch())
    after = [v.numpy() for v in model.trainable_variables]
    updates[clip] = ([a - b for a, b in zip(after, before)], float(metrics["grad_norm"]))
  unclipped, norm = updates[1e9]
  clipped, clipped_norm = updates[0.05]
  assert clipped_norm == pytest.approx(norm, rel=1e-5) and norm > 0.05
  assert np.sqrt(sum(np.sum(u**2) for u in unclipped)) == pytest.approx(norm, rel=1e-4)
  for a, b in zip(clipped, unclipped):
    np.testing.assert_allclose(a, b * 0.05 / norm, rtol=1e-3, atol=1e-7)
