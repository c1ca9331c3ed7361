"""Training draws keyed on (seed, step) by `randomness.rekey`: the same step draws the same,
whatever ran before, in a fresh model, inside a `tf.function` and under MirroredStrategy."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning import experiment
from captioning.models import decoders
from captioning.models import randomness
import helpers
import layer_testing

# Every source of training randomness the captioner has, switched on: the neck's block dropout,
# the SAT decoder's output and initial-state dropouts (and its LSTM cell's generator), the
# Transformer's embedding, residual and attention-weight dropouts.
CASES = {
  "sat_lstm": {
    "neck": {"blocks": 1, "block_heads": 2, "block_dropout": 0.2},
    "decoder": {"dropout": 0.3, "init_dropout": 0.5},
  },
  "transformer": {
    "decoder": {
      "name": "transformer",
      "num_layers": 1,
      "width": 16,
      "num_heads": 2,
      "max_length": 8,
      "dropout": 0.3,
    },
  },
}


def _batch(batch=4):
  images = tf.random.stateless_uniform([batch, 32, 32, 3], [1, 2], 0, 255)
  tokens = tf.random.stateless_uniform([batch, 6], [3, 4], 1, 20, tf.int32)
  return {"image": images, "tokens": tokens}


def _model(name, keras_seed=0, **overrides):
  keras.utils.set_random_seed(keras_seed)  # weights and the generators' initial states
  sections = {key: {**value, **overrides.get(key, {})} for key, value in CASES[name].items()}
  return helpers.tiny_captioner(**sections)


def _train_logits(model, batch, seed, step):
  randomness.rekey(model, seed, step)
  return model(batch, training=True)["logits"].numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_step_draws_the_same_whatever_ran_before(name):
  model, batch = _model(name), _batch()
  first = _train_logits(model, batch, seed=7, step=3)
  np.testing.assert_array_equal(_train_logits(model, batch, seed=7, step=3), first)
  # Other steps, and draws left unkeyed, in between: step 3 still draws what it drew.
  for step in (4, 0, 12):
    assert not np.array_equal(_train_logits(model, batch, seed=7, step=step), first), step
  model(batch, training=True)
  np.testing.assert_array_equal(_train_logits(model, batch, seed=7, step=3), first)
  assert not np.array_equal(_train_logits(model, batch, seed=8, step=3), first)  # another run


@pytest.mark.parametrize(
  "name, overrides",
  [
    ("sat_lstm", {"decoder": {"dropout": 0.0}}),  # the initial-state dropout alone
    ("sat_lstm", {"decoder": {"init_dropout": 0.0}, "neck": {"block_dropout": 0.0}}),
    ("sat_lstm", {"decoder": {"dropout": 0.0, "init_dropout": 0.0}}),  # the neck's blocks
    ("transformer", {}),
  ],
  ids=["sat_init_dropout", "sat_output_dropout", "neck_block_dropout", "transformer_dropout"],
)
def test_every_training_draw_is_keyed(name, overrides):
  # Each source of randomness on its own: it does draw (training differs from inference), and
  # two passes after the same rekey are identical, so nothing draws from a generator that
  # rekey does not set (a stateful tf.random op or keras.random's global generator would).
  model, batch = _model(name, **overrides), _batch(batch=8)
  inference = model(batch, training=False)["logits"].numpy()
  first = _train_logits(model, batch, seed=1, step=5)
  assert not np.allclose(first, inference)
  np.testing.assert_array_equal(_train_logits(model, batch, seed=1, step=5), first)


def test_the_generators_found_are_exactly_the_seed_generator_states():
  model = _model("sat_lstm")
  states = randomness.seed_states(model)
  # The neck block's and SAT's output dropout, the initial-state dropout and the LSTM cell.
  assert len(states) == 4
  assert all(state.path.endswith("seed_generator_state") for state in states), states
  assert {id(s) for s in states}.isdisjoint(id(w) for w in model.weights)
  no_dropout = _model("sat_lstm", neck={"block_dropout": 0.0}, decoder={"dropout": 0.0})
  assert len(randomness.seed_states(no_dropout)) == 2  # LSTM cell, initial-state dropout


def test_the_sat_decoder_with_its_own_generator_keeps_the_layer_contract():
  # Its get_config, .keras file and weights are those of a decoder without the generator.
  settings = {"vocab_size": 20, "embed_dim": 8, "hidden_dim": 12, "attention_dim": 6}
  features = tf.random.stateless_normal([2, 6, 5], seed=[0, 0])
  tokens = tf.random.stateless_uniform([2, 5], [7, 1], 1, 20, tf.int32)
  layer = layer_testing.check_layer(
    decoders.ShowAttendTellDecoder,
    {**settings, "init_dropout": 0.5, "name": "decoder"},
    [features, tokens],
  )
  plain = decoders.ShowAttendTellDecoder(**settings, name="decoder")
  plain(features, tokens)
  assert [w.path for w in layer.weights] == [w.path for w in plain.weights]
  assert len(randomness.seed_states(layer)) == len(randomness.seed_states(plain)) + 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fresh_model_resumes_the_draws_of_the_step(name):
  # An uninterrupted run at step 3, and a new process's model (other generator states) that
  # has the same weights and resumes at step 3.
  run, batch = _model(name, keras_seed=0), _batch()
  for step in range(3):
    _train_logits(run, batch, seed=7, step=step)
  expected = _train_logits(run, batch, seed=7, step=3)
  resumed = _model(name, keras_seed=1)
  for source, target in zip(run.weights, resumed.weights):
    target.assign(source)
  np.testing.assert_array_equal(_train_logits(resumed, batch, seed=7, step=3), expected)


def test_checkpoints_hold_no_generator_state_and_old_ones_still_restore(tmp_path):
  # A model with no initial-state dropout stands for a checkpoint written before the SAT
  # decoder owned a generator of its own.
  def checkpoint(model):
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    optimizers = {"optimizer": (optimizer, model.trainable_variables)}
    return experiment.training_checkpoint(model, optimizers, step)

  old = _model("sat_lstm", decoder={"init_dropout": 0.0})
  path = checkpoint(old).save(str(tmp_path / "ckpt"))
  names = [name for name, _ in tf.train.list_variables(path)]
  assert not [name for name in names if "seed" in name.lower()]
  new = _model("sat_lstm", keras_seed=1)
  checkpoint(new).read(path).assert_existing_objects_matched().expect_partial()
  for source, target in zip(old.weights, new.weights):
    np.testing.assert_array_equal(target.numpy(), source.numpy())


def test_rekey_inside_a_tf_function_traces_once_and_matches_eager():
  model, batch = _model("transformer"), _batch()

  @tf.function
  def forward(step):
    randomness.rekey(model, 7, step)
    return model(batch, training=True)["logits"]

  compiled = forward(tf.constant(3, tf.int64)).numpy()
  np.testing.assert_array_equal(forward(tf.constant(3, tf.int64)).numpy(), compiled)
  assert not np.array_equal(forward(tf.constant(4, tf.int64)).numpy(), compiled)
  assert forward.experimental_get_tracing_count() == 1
  np.testing.assert_allclose(_train_logits(model, batch, seed=7, step=3), compiled, atol=1e-5)


MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import keras
import helpers
from captioning.models import randomness
sections = json.loads(sys.argv[2])
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
  model = helpers.tiny_captioner(**sections)
single = helpers.tiny_captioner(**sections)  # the same weights, outside the strategy
for source, target in zip(model.weights, single.weights):
  target.assign(source)
images = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], 0, 255)
tokens = tf.random.stateless_uniform([4, 6], [3, 4], 1, 20, tf.int32)
data = tf.data.Dataset.from_tensors({"image": images, "tokens": tokens})
batch = next(iter(strategy.experimental_distribute_dataset(data)))

@tf.function
def step_fn(batch, step):
  randomness.rekey(model, 7, step)  # cross-replica context, before strategy.run
  logits = strategy.run(lambda b: model(b, training=True)["logits"], args=(batch,))
  return strategy.gather(logits, axis=0)

def run(step):
  return step_fn(batch, tf.constant(step, tf.int64)).numpy()

first = run(1)
others = [run(step) for step in (2, 0, 5)]
again = run(1)
# Each replica draws what one device draws for its half of the batch at that step.
halves = []
for rows in (slice(0, 2), slice(2, 4)):
  randomness.rekey(single, 7, 1)
  halves.append(single({"image": images[rows], "tokens": tokens[rows]}, training=True)["logits"])
print(json.dumps({
  "replicas": strategy.num_replicas_in_sync,
  "same": bool(np.array_equal(first, again)),
  "others_differ": [not np.array_equal(first, other) for other in others],
  "single_device_gap": float(np.abs(np.concatenate(halves) - first).max()),
  "replicas_differ_from_inference": bool(not np.allclose(
      first, single({"image": images, "tokens": tokens}, training=False)["logits"])),
}))
"""


@pytest.mark.parametrize("name", sorted(CASES))
def test_rekey_under_mirrored_strategy_on_two_cpu_devices(name):
  # A subprocess: logical devices must be set before TensorFlow initialises.
  tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = helpers.run_json_script(MIRRORED, tests_dir, json.dumps(CASES[name]))
  assert out["replicas"] == 2
  assert out["same"] and all(out["others_differ"]), out
  assert out["single_device_gap"] < 1e-5, out
  assert out["replicas_differ_from_inference"], out
