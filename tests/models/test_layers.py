"""Layer tests: output shapes, masks, and serialisation round trips (keras-hub style)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import layers


def round_trip(layer):
  config = keras.saving.serialize_keras_object(layer)
  return keras.saving.deserialize_keras_object(config)


def copy_weights(src, dst):
  for a, b in zip(src.weights, dst.weights):
    b.assign(a)


def test_multi_head_attention_shapes_and_scores():
  layer = layers.MultiHeadAttention(num_heads=4, key_dim=8)
  query, value = tf.random.normal([2, 7, 32]), tf.random.normal([2, 11, 24])
  out, scores = layer(query, value, return_attention_scores=True)
  assert out.shape == (2, 7, 32)
  assert scores.shape == (2, 4, 7, 11)  # [B, N, Tq, Tk]
  np.testing.assert_allclose(scores.numpy().sum(-1), 1.0, atol=1e-5)
  assert layers.MultiHeadAttention(2, 8, output_dim=5)(query, value).shape == (2, 7, 5)


def test_multi_head_attention_key_mask():
  layer = layers.MultiHeadAttention(num_heads=2, key_dim=4)
  query, value = tf.random.normal([2, 3, 8]), tf.random.normal([2, 6, 8])
  key_mask = tf.constant([[1, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 0]]) > 0
  out, scores = layer(query, value, key_mask=key_mask, return_attention_scores=True)
  scores = scores.numpy()
  assert np.all(scores[0, :, :, 4:] == 0) and np.all(scores[1, :, :, 1::2] == 0)
  np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
  # Changing masked values must not change the output.
  noisy = value.numpy().copy()
  noisy[0, 4:] += 100.0
  noisy[1, 1::2] -= 50.0
  out2 = layer(query, tf.constant(noisy), key_mask=key_mask)
  np.testing.assert_allclose(out.numpy(), out2.numpy(), atol=1e-4)


def test_multi_head_attention_causal_mask():
  layer = layers.MultiHeadAttention(num_heads=2, key_dim=4)
  x = tf.random.normal([1, 5, 8])
  out, scores = layer(x, use_causal_mask=True, return_attention_scores=True)
  assert np.all(np.triu(scores.numpy()[0, 0], k=1) == 0)
  # Future positions do not influence the past.
  y = x.numpy().copy()
  y[0, 3:] += 10.0
  out2 = layer(tf.constant(y), use_causal_mask=True)
  np.testing.assert_allclose(out.numpy()[0, :3], out2.numpy()[0, :3], atol=1e-4)


def test_multi_head_attention_round_trip():
  layer = layers.MultiHeadAttention(num_heads=2, key_dim=4, output_dim=6, dropout=0.1)
  query, value = tf.random.normal([2, 3, 8]), tf.random.normal([2, 5, 8])
  expected = layer(query, value)
  restored = round_trip(layer)
  assert restored.get_config() == layer.get_config()
  restored(query, value)
  copy_weights(layer, restored)
  np.testing.assert_allclose(restored(query, value).numpy(), expected.numpy(), atol=1e-6)


def test_additive_attention_shapes_masks_and_round_trip():
  layer = layers.AdditiveAttention(16)
  features, state = tf.random.normal([3, 10, 8]), tf.random.normal([3, 12])
  context, weights = layer(features, state)
  assert context.shape == (3, 8) and weights.shape == (3, 10)
  np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(
    context.numpy(), np.einsum("bl,blc->bc", weights.numpy(), features.numpy()), atol=1e-5
  )
  mask = tf.constant(np.arange(10)[None, :] < np.array([[4], [10], [1]]))
  _, masked = layer(features, state, feature_mask=mask)
  assert np.all(masked.numpy()[0, 4:] == 0) and masked.numpy()[2, 0] == pytest.approx(1.0)
  # Precomputed projections give the same result.
  same, _ = layer(features, state, projected_features=layer.precompute(features))
  np.testing.assert_allclose(same.numpy(), context.numpy(), atol=1e-6)
  restored = round_trip(layer)
  restored(features, state)
  copy_weights(layer, restored)
  np.testing.assert_allclose(restored(features, state)[0].numpy(), context.numpy(), atol=1e-6)


def test_position_embedding_and_flatten():
  maps = tf.zeros([2, 4, 5, 3])
  pos = layers.PositionEmbedding2D()
  out = pos(maps)
  assert out.shape == (2, 4, 5, 3)
  assert not np.allclose(out.numpy()[0, 0, 0], out.numpy()[0, 3, 4])  # positions differ
  flat = layers.SpatialFlatten()(out)
  assert flat.shape == (2, 20, 3)
  with pytest.raises(ValueError, match="static feature-map size"):
    layers.PositionEmbedding2D().build((None, None, None, 3))
  assert round_trip(layers.Threshold(0.25)).threshold == 0.25


def test_append_coordinates():
  maps = tf.random.normal([2, 3, 4, 5])
  out = layers.AppendCoordinates()(maps).numpy()
  assert out.shape == (2, 3, 4, 7)
  np.testing.assert_array_equal(out[..., :5], maps.numpy())
  np.testing.assert_allclose(out[0, :, 0, 5], [-1, 0, 1])  # rows, top to bottom
  np.testing.assert_allclose(out[1, 0, :, 6], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)  # columns
  assert round_trip(layers.AppendCoordinates()).compute_output_shape((None, 3, 4, 5)) == (
    None,
    3,
    4,
    7,
  )


def test_append_one_hot_coordinates():
  maps = tf.zeros([1, 2, 3, 1])
  out = layers.AppendCoordinates("one_hot")(maps).numpy()
  assert out.shape == (1, 2, 3, 1 + 2 + 3)
  np.testing.assert_array_equal(out[0, 1, 2], [0, 0, 1, 0, 0, 1])  # row 1, column 2
  np.testing.assert_array_equal(out[0, 0, 0], [0, 1, 0, 1, 0, 0])
  assert layers.AppendCoordinates("one_hot").compute_output_shape((None, 2, 3, 1)) == (
    None,
    2,
    3,
    6,
  )
  with pytest.raises(ValueError, match="encoding"):
    layers.AppendCoordinates("polar")


def test_transformer_encoder_block_mixes_locations_and_respects_masks():
  layer = layers.TransformerEncoderBlock(num_heads=2, mlp_dim=16)
  x = tf.random.normal([2, 6, 10])  # 10 channels: key_dim defaults to 10 // 2
  out = layer(x)
  assert out.shape == (2, 6, 10)
  assert layer.attention.key_dim == 5
  # Every location sees every other one: changing location 5 changes location 0's output.
  y = x.numpy().copy()
  y[:, 5] = np.random.RandomState(0).normal(size=y[:, 5].shape) * 3.0  # not a constant shift,
  # which the block's LayerNorm removes.
  assert np.abs(layer(tf.constant(y)).numpy()[:, 0] - out.numpy()[:, 0]).max() > 1e-3
  # ... unless location 5 is masked out as a key.
  key_mask = tf.constant([[True] * 5 + [False]] * 2)
  masked = layer(x, key_mask=key_mask).numpy()
  np.testing.assert_allclose(
    layer(tf.constant(y), key_mask=key_mask).numpy()[:, :5], masked[:, :5], atol=1e-5
  )


def test_transformer_encoder_block_round_trip_and_dropout():
  layer = layers.TransformerEncoderBlock(num_heads=2, key_dim=3, dropout=0.5)
  x = tf.random.normal([2, 4, 8])
  expected = layer(x)
  np.testing.assert_allclose(layer(x).numpy(), expected.numpy())  # inference: no dropout
  assert np.abs(layer(x, training=True).numpy() - expected.numpy()).max() > 1e-4
  restored = round_trip(layer)
  assert restored.get_config() == layer.get_config()
  restored(x)
  copy_weights(layer, restored)
  np.testing.assert_allclose(restored(x).numpy(), expected.numpy(), atol=1e-6)
  with pytest.raises(ValueError, match="heads"):
    layers.TransformerEncoderBlock(num_heads=16)(tf.zeros([1, 2, 8]))


def identity_keypoints(units):
  """A RelativeKeypoints layer whose projection passes `units` channels through unchanged."""
  layer = layers.RelativeKeypoints(units)
  layer.build((None, 8, 8, units))
  layer.project.kernel.assign(np.eye(units, dtype="float32"))
  layer.project.bias.assign(np.zeros(units, "float32"))
  return layer


def two_objects(batch=1):
  """Maps where channel 0 peaks on object A and channel 1 on object B."""
  return np.zeros([batch, 8, 8, 2], "float32")


def test_relative_keypoints_point_from_each_object_to_the_others():
  maps = two_objects()
  maps[0, 1, 1, 0] = maps[0, 6, 5, 1] = 30.0  # A at (row 1, col 1), B at (row 6, col 5)
  out = identity_keypoints(2)(maps).numpy()
  assert out.shape == (1, 8, 8, 4)  # [row offsets of keypoints A, B; column offsets of A, B]
  pos = np.linspace(-1, 1, 8)
  at_a, at_b = out[0, 1, 1], out[0, 6, 5]
  # Seen from A, B lies below and to the right, by exactly B's position minus A's ...
  np.testing.assert_allclose(at_a[[1, 3]], [pos[6] - pos[1], pos[5] - pos[1]], atol=1e-5)
  # ... seen from B, A lies above and to the left ...
  np.testing.assert_allclose(at_b[[0, 2]], [pos[1] - pos[6], pos[1] - pos[5]], atol=1e-5)
  # ... and an object's own keypoint is where it stands.
  np.testing.assert_allclose(at_a[[0, 2]], 0.0, atol=1e-5)
  np.testing.assert_allclose(at_b[[1, 3]], 0.0, atol=1e-5)
  # A channel with no peak has its keypoint at the centre of the map.
  np.testing.assert_allclose(
    identity_keypoints(2)(two_objects()).numpy()[0, 0, 0], [1, 1, 1, 1], atol=1e-5
  )


def test_relative_keypoints_do_not_depend_on_where_the_pair_is_and_round_trip():
  layer = identity_keypoints(2)
  maps = two_objects(batch=2)
  maps[0, 2, 1, 0] = maps[0, 2, 4, 1] = 30.0
  maps[1, 5, 3, 0] = maps[1, 5, 6, 1] = 30.0  # the same pair, moved
  out = layer(maps).numpy()
  np.testing.assert_allclose(out[0, 2, 1], out[1, 5, 3], atol=1e-5)
  restored = round_trip(layer)
  assert restored.get_config() == layer.get_config()
  restored(maps)
  copy_weights(layer, restored)
  np.testing.assert_allclose(restored(maps).numpy(), out, atol=1e-6)
  with pytest.raises(ValueError, match="units"):
    layers.RelativeKeypoints(0)


def test_multi_head_attention_equals_keras_with_the_same_weights():
  """The raw-op layer computes what keras.layers.MultiHeadAttention computes (to 1e-5)."""
  num_heads, key_dim = 3, 4
  query, value = tf.random.normal([2, 5, 10], seed=1), tf.random.normal([2, 7, 6], seed=2)
  ours = layers.MultiHeadAttention(num_heads, key_dim, output_dim=10)
  ours.build(query.shape, value.shape)
  theirs = keras.layers.MultiHeadAttention(num_heads, key_dim)
  theirs(query, value)  # builds it
  # Keras keeps [D, N, Dh] einsum kernels and [N, Dh, D] for the output; ours are Dense.
  for mine, their in (
    (ours.query_dense, theirs._query_dense),
    (ours.key_dense, theirs._key_dense),
    (ours.value_dense, theirs._value_dense),
  ):
    their.kernel.assign(tf.reshape(mine.kernel, their.kernel.shape))
    their.bias.assign(tf.reshape(mine.bias, their.bias.shape))
  theirs._output_dense.kernel.assign(
    tf.reshape(ours.output_dense.kernel, theirs._output_dense.kernel.shape)
  )
  theirs._output_dense.bias.assign(ours.output_dense.bias)
  out, scores = ours(query, value, return_attention_scores=True)
  expected, expected_scores = theirs(query, value, return_attention_scores=True)
  np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
  np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=1e-5)
  # With a key-padding mask (Keras takes it as a [B, Tq, Tk] attention mask).
  key_mask = tf.constant([[1, 1, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 1, 1]]) > 0
  masked = ours(query, value, key_mask=key_mask)
  keras_mask = tf.tile(key_mask[:, tf.newaxis], [1, 5, 1])
  np.testing.assert_allclose(
    masked.numpy(), theirs(query, value, attention_mask=keras_mask).numpy(), atol=1e-5
  )
  # Causal self-attention.
  self_ours = layers.MultiHeadAttention(num_heads, key_dim)
  self_ours.build(query.shape)
  self_theirs = keras.layers.MultiHeadAttention(num_heads, key_dim)
  self_theirs(query, query)
  for mine, their in zip(self_ours.weights, self_theirs.weights):
    their.assign(tf.reshape(mine, their.shape))
  np.testing.assert_allclose(
    self_ours(query, use_causal_mask=True).numpy(),
    self_theirs(query, query, use_causal_mask=True).numpy(),
    atol=1e-5,
  )


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_attention_softmaxes_run_in_float32_under_mixed_precision(dtype):
  def softmaxes(fn, *specs):
    graph = tf.function(fn).get_concrete_function(*specs).graph
    return [op.outputs[0].dtype for op in graph.get_operations() if op.type == "Softmax"]

  spec = tf.TensorSpec([2, 3, 8], dtype)
  assert softmaxes(lambda q, k, v: layers.dot_product_attention(q, k, v), spec, spec, spec) == [
    tf.float32
  ]
  additive = layers.AdditiveAttention(4, dtype=f"mixed_{dtype.name}")
  additive.build((2, 5, 8), (2, 6))
  features, state = tf.TensorSpec([2, 5, 8], dtype), tf.TensorSpec([2, 6], dtype)
  assert softmaxes(lambda f, s: additive(f, s), features, state) == [tf.float32]
