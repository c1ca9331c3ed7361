"""The neck: position signals on the feature grid, then the raw-op flatten to a sequence."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import neck as neck_lib


def maps(batch=3, seed=0):
  return tf.random.stateless_normal([batch, 8, 8, 16], seed=[seed, 1])


def built(**kwargs):
  layer = neck_lib.Neck(**kwargs)
  layer.build((None, 8, 8, 16))
  return layer


def test_sequence_shape_and_exact_coordinates_last():
  layer = built()
  out = layer(maps()).numpy()
  assert out.shape == (3, 64, 18) == layer.compute_output_shape((3, 8, 8, 16))
  assert layer.feature_map_shape == (8, 8) and layer.appends_linear_coordinates
  rows, cols = np.meshgrid(np.linspace(-1, 1, 8), np.linspace(-1, 1, 8), indexing="ij")
  np.testing.assert_allclose(out[0, :, -2], rows.reshape(-1), atol=1e-6)
  np.testing.assert_allclose(out[0, :, -1], cols.reshape(-1), atol=1e-6)
  one_hot = built(position_channels="one_hot")
  assert one_hot(maps()).shape == (3, 64, 16 + 16) and not one_hot.appends_linear_coordinates
  none = built(position_channels="none")  # the features alone, as Show, Attend and Tell has them
  out = none(maps())
  assert out.shape == (3, 64, 16) == none.compute_output_shape((3, 8, 8, 16))
  assert not none.appends_linear_coordinates and not none.weights
  np.testing.assert_array_equal(out, tf.reshape(maps(), [3, 64, 16]))
  with pytest.raises(ValueError, match="position_channels must be one of"):
    built(position_channels="sine")


def test_blocks_update_features_but_keep_positions_exact():
  plain, blocks = built(), built(blocks=1)
  features, plain_features = blocks(maps()).numpy(), plain(maps()).numpy()
  assert features.shape == plain_features.shape  # [B, L, C + 2]
  np.testing.assert_array_equal(features[..., -2:], plain_features[..., -2:])
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(blocks(maps(), training=True) ** 2)
  grads = tape.gradient(loss, blocks.trainable_variables)
  assert len([v for v in blocks.trainable_variables if "block0" in v.path]) >= 10
  assert all(g is not None for g in grads)


def test_relative_keypoints_extend_the_features_and_keep_positions_last():
  plain, layer = built(), built(relative_keypoints=5)
  features = layer(maps()).numpy()
  assert features.shape == (3, 64, 16 + 10 + 2) == layer.compute_output_shape((3, 8, 8, 16))
  np.testing.assert_allclose(features[..., -2:], plain(maps()).numpy()[..., -2:])


def test_round_trip_and_bad_values():
  layer = built(relative_keypoints=2, blocks=1, block_heads=2)
  config = keras.saving.serialize_keras_object(layer)
  restored = keras.saving.deserialize_keras_object(config)
  assert restored.built  # from the serialised build config
  for a, b in zip(layer.weights, restored.weights):
    b.assign(a)
  np.testing.assert_array_equal(restored(maps()).numpy(), layer(maps()).numpy())
  assert restored.get_config() == layer.get_config()
  for kwargs, message in (
    ({"blocks": -1}, "blocks"),
    ({"relative_keypoints": 1.5}, "relative_keypoints"),
    ({"block_heads": 0}, "block_heads"),
    ({"block_dropout": 1.0}, "block_dropout"),
    ({"position_channels": "polar"}, "position_channels"),
  ):
    with pytest.raises(ValueError, match=message):
      neck_lib.Neck(**kwargs)
