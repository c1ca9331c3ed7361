"""FusedAdamW: Keras's AdamW, updated by TF's fused kernel."""

import keras
import numpy as np
import tensorflow as tf

from captioning import optimizers


def run(optimizer_class, steps=4):
  """Weights after `steps` updates of two variables (a matrix with weight decay, a vector)."""
  strategy = tf.distribute.get_strategy()
  rng = np.random.RandomState(0)
  with strategy.scope():
    weights = [
      keras.Variable(rng.normal(size=(5, 3)).astype("float32"), name="kernel"),
      keras.Variable(rng.normal(size=(3,)).astype("float32"), name="bias"),
    ]
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 10, warmup_target=0.2, warmup_steps=2)
    optimizer = optimizer_class(schedule, weight_decay=0.05)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build(weights)

  @tf.function
  def step(grads):
    strategy.run(lambda: optimizer.apply_gradients(zip(grads, weights)))

  for _ in range(steps):
    step([tf.constant(rng.normal(size=w.shape).astype("float32")) for w in weights])
  slots = [v.numpy() for v in optimizer.variables]
  return [w.numpy() for w in weights], slots, int(optimizer.iterations.numpy())


def test_fused_adamw_updates_as_keras_adamw():
  ours, our_slots, our_steps = run(optimizers.FusedAdamW)
  theirs, their_slots, their_steps = run(keras.optimizers.AdamW)
  assert our_steps == their_steps == 4
  for a, b in zip(ours + our_slots, theirs + their_slots):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(ours[0], run(optimizers.FusedAdamW, steps=0)[0][0])  # it moved


def test_fused_adamw_serializes():
  # Under MirroredStrategy: tests/test_train_step.py's one-device vs mirrored step uses it.
  optimizer = optimizers.FusedAdamW(1e-3, weight_decay=0.1)
  again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
  assert type(again) is optimizers.FusedAdamW and again.get_config() == optimizer.get_config()
