"""VocabularyProjection: keras Dense's float32 logits, backward products in the input's dtype."""

import keras
import numpy as np
import tensorflow as tf

from captioning.models import output_projection


def _pair(dtype):
  """A VocabularyProjection with `dtype` and a float32 keras Dense with the same weights."""
  projection = output_projection.VocabularyProjection(7, dtype=dtype)
  projection.build((None, 5))
  dense = keras.layers.Dense(7, dtype="float32")
  dense.build((None, 5))
  rng = np.random.RandomState(0)
  for a, b in zip(projection.weights, dense.weights):
    value = rng.normal(size=a.shape).astype("float32")
    a.assign(value)
    b.assign(value)
  return projection, dense


def _run(layer, x, d_logits):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    loss = tf.reduce_sum(y * d_logits)
  dx, *d_weights = tape.gradient(loss, [x, *layer.trainable_variables])
  return y, dx, d_weights


def _inputs(dtype):
  rng = np.random.RandomState(1)
  x = tf.cast(tf.constant(rng.normal(size=(3, 4, 5)), tf.float32), dtype)
  d_logits = tf.constant(rng.normal(size=(3, 4, 7)), tf.float32)
  return x, d_logits


def test_float32_inputs_get_keras_dense_maths():
  projection, dense = _pair("float32")
  x, d_logits = _inputs(tf.float32)
  for a, b in zip(
    tf.nest.flatten(_run(projection, x, d_logits)), tf.nest.flatten(_run(dense, x, d_logits))
  ):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_bfloat16_inputs_keep_float32_logits_and_take_bfloat16_backward_products():
  projection, dense = _pair("mixed_bfloat16")
  x, d_logits = _inputs(tf.bfloat16)
  y, dx, (d_kernel, d_bias) = _run(projection, x, d_logits)
  # The forward pass is Dense's in float32 on the (exactly widened) inputs.
  y_dense, dx_dense, (d_kernel_dense, d_bias_dense) = _run(dense, tf.cast(x, tf.float32), d_logits)
  assert y.dtype == tf.float32
  np.testing.assert_allclose(y.numpy(), y_dense.numpy(), rtol=1e-6, atol=1e-6)
  # Gradients: dx in the input's dtype, the variables' in float32, within bfloat16 rounding.
  assert dx.dtype == tf.bfloat16
  assert d_kernel.dtype == tf.float32 and d_bias.dtype == tf.float32
  for actual, expected in ((dx, dx_dense), (d_kernel, d_kernel_dense)):
    actual = tf.cast(actual, tf.float32).numpy()
    error = np.linalg.norm(actual - expected.numpy()) / np.linalg.norm(expected.numpy())
    assert 0 < error < 2e-2  # rounded (so not float32's products), but only by bfloat16's
  np.testing.assert_allclose(d_bias.numpy(), d_bias_dense.numpy(), rtol=1e-6)  # float32 sum


def test_under_mixed_precision_the_variables_stay_float32_and_config_round_trips():
  projection, _ = _pair("mixed_bfloat16")
  assert all(v.dtype == "float32" for v in projection.weights)
  restored = output_projection.VocabularyProjection.from_config(projection.get_config())
  assert restored.dtype_policy.name == "mixed_bfloat16" and restored.units == 7
  symbolic = projection(keras.Input((4, 5), dtype="bfloat16"))
  assert symbolic.dtype == "float32" and tuple(symbolic.shape) == (None, 4, 7)


def test_without_a_bias_it_is_keras_dense_for_any_input_dtype():
  projection = output_projection.VocabularyProjection(7, use_bias=False, dtype="mixed_bfloat16")
  projection.build((None, 5))
  dense = keras.layers.Dense(7, use_bias=False, dtype="float32")
  dense.build((None, 5))
  dense.kernel.assign(projection.kernel)
  x, _ = _inputs(tf.bfloat16)
  y = projection(x)
  assert y.dtype == tf.float32
  np.testing.assert_allclose(y.numpy(), dense(tf.cast(x, tf.float32)).numpy(), rtol=1e-6)
