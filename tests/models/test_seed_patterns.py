"""The seed blog post's three patterns: what fails in Keras 3, and the layer form that works.

The post applies `tf.where`, `tf.reshape` and a matmul/softmax attention directly to the outputs
of functional-API layers. In Keras 3 those outputs are symbolic KerasTensors and TensorFlow ops
reject them; the same ops inside `Layer.call` work.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import layers

KERAS_TENSOR_ERROR = "A KerasTensor cannot be used as input to a TensorFlow function"


def test_keras_version_is_3():
  assert keras.__version__.split(".")[0] == "3"


def test_tf_where_on_functional_output_fails_and_threshold_layer_works():
  inputs = keras.Input(shape=(10,))
  x = keras.layers.Dense(16, activation="relu")(inputs)
  with pytest.raises(ValueError, match=KERAS_TENSOR_ERROR):
    tf.where(x > 0.5, tf.ones_like(x), tf.zeros_like(x))

  stepped = layers.Threshold(0.5)(x)
  model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(stepped))
  out = model(np.random.RandomState(0).randn(4, 10).astype("float32"))
  assert out.shape == (4, 2)
  values = layers.Threshold(0.5)(tf.constant([[0.2, 0.5, 0.7, -1.0]])).numpy()
  np.testing.assert_array_equal(values, [[0.0, 0.0, 1.0, 0.0]])


def test_tf_reshape_on_functional_output_fails_and_flatten_layer_works():
  inputs = keras.Input(shape=(28, 28, 3))
  x = keras.layers.Conv2D(32, 3, activation="relu")(inputs)  # [B, 26, 26, 32]
  with pytest.raises(ValueError, match=KERAS_TENSOR_ERROR):
    tf.reshape(x, (-1, 26 * 26 * 32))

  sequence = layers.SpatialFlatten()(x)
  assert tuple(sequence.shape) == (None, 26 * 26, 32)
  model = keras.Model(inputs, keras.layers.Dense(10)(sequence))
  images = np.random.RandomState(0).rand(2, 28, 28, 3).astype("float32")
  assert model(images).shape == (2, 26 * 26, 10)
  # The layer is a pure reshape: location (i, j) lands at index i * W + j.
  maps = tf.random.normal([2, 3, 5, 4])
  flat = layers.SpatialFlatten()(maps).numpy()
  np.testing.assert_array_equal(flat[:, 2 * 5 + 3], maps.numpy()[:, 2, 3])


def seed_dot_product_attention(query, key_value):
  """The seed post's attention, verbatim: scores transposed and softmax over the wrong axis."""
  query_transpose = tf.transpose(query, perm=[0, 2, 1])
  attn_weights = tf.matmul(key_value, query_transpose)  # [B, Tk, Tq]
  attn_weights = tf.nn.softmax(attn_weights, axis=1)
  return tf.matmul(attn_weights, key_value)


def test_seed_attention_on_functional_outputs_fails():
  encoder_output = keras.Input(shape=(50, 128))
  decoder_output = keras.Input(shape=(30, 128))
  with pytest.raises(ValueError, match=KERAS_TENSOR_ERROR):
    seed_dot_product_attention(decoder_output, encoder_output)


def test_seed_attention_is_wrong_in_shape_even_on_eager_tensors():
  # With real tensors the seed's last matmul multiplies [B, 50, 30] by [B, 50, 128]: invalid.
  query, key_value = tf.random.normal([2, 30, 128]), tf.random.normal([2, 50, 128])
  with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
    seed_dot_product_attention(query, key_value)


def test_dot_product_attention_shapes_normalisation_and_masking():
  rng = np.random.RandomState(0)
  query = tf.constant(rng.randn(2, 30, 16), tf.float32)
  key = tf.constant(rng.randn(2, 50, 16), tf.float32)
  value = tf.constant(rng.randn(2, 50, 8), tf.float32)
  key_mask = np.ones([2, 50], bool)
  key_mask[0, 40:] = False
  key_mask[1, :5] = False
  output, weights = layers.dot_product_attention(query, key, value, key_mask[:, None, :])
  assert output.shape == (2, 30, 8)  # [B, Tq, Dv]
  assert weights.shape == (2, 30, 50)  # [B, Tq, Tk]
  np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, atol=1e-5)  # sums over keys
  assert np.all(weights.numpy()[0, :, 40:] == 0.0)
  assert np.all(weights.numpy()[1, :, :5] == 0.0)
  # Reference computation in numpy.
  scores = np.einsum("bqd,bkd->bqk", query.numpy(), key.numpy()) / np.sqrt(16)
  scores = np.where(key_mask[:, None, :], scores, -np.inf)
  expected = np.exp(scores - scores.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(weights.numpy(), expected, atol=1e-5)
  np.testing.assert_allclose(output.numpy(), expected @ value.numpy(), atol=1e-5)


def test_attention_with_every_key_masked_gives_zeros_not_nan():
  query, key = tf.random.normal([1, 3, 4]), tf.random.normal([1, 5, 4])
  mask = tf.zeros([1, 1, 5], tf.bool)
  output, weights = layers.dot_product_attention(query, key, key, mask)
  assert np.all(np.isfinite(output.numpy())) and np.all(weights.numpy() == 0.0)


def test_attention_layer_in_a_functional_model():
  """The seed's model, done right: the attention math lives inside a layer's call."""
  encoder_output = keras.Input(shape=(50, 128))
  decoder_output = keras.Input(shape=(30, 128))
  attended = layers.MultiHeadAttention(num_heads=1, key_dim=128)(decoder_output, encoder_output)
  model = keras.Model([encoder_output, decoder_output], keras.layers.Dense(10)(attended))
  out = model([tf.random.normal([2, 50, 128]), tf.random.normal([2, 30, 128])])
  assert out.shape == (2, 30, 10)
