"""Every layer the project registers passes the shared layer contract (tests/layer_testing.py):
output shapes, serialisation, a `.keras` file, a gradient step and mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import decoders
from captioning.models import encoders
from captioning.models import layers
from captioning.models import neck
from captioning.models import output_projection
from captioning.models import transformer
import layer_testing


def _normal(*shape, seed=0):
  return tf.random.stateless_normal(shape, seed=[seed, 0])


def _tokens(batch=2, steps=5, vocab=20):
  return tf.random.stateless_uniform([batch, steps], [7, 1], 1, vocab, tf.int32)


def _images(batch=2, size=32):
  return tf.random.stateless_uniform([batch, size, size, 3], [3, 1], 0, 256, tf.int32)


# (id, class, constructor arguments, call inputs, call keywords, output shapes, options).
CASES = [
  ("spatial_flatten", layers.SpatialFlatten, {}, [_normal(2, 3, 4, 5)], {}, (2, 12, 5), {}),
  ("threshold", layers.Threshold, {"threshold": 0.1}, [_normal(2, 6)], {}, (2, 6), {}),
  (
    "vocabulary_projection",
    output_projection.VocabularyProjection,
    {"units": 9},
    [_normal(2, 5, 6)],
    {},
    (2, 5, 9),
    {},
  ),
  ("position_2d", layers.PositionEmbedding2D, {}, [_normal(2, 3, 4, 5)], {}, (2, 3, 4, 5), {}),
  (
    "coordinates_linear",
    layers.AppendCoordinates,
    {"encoding": "linear"},
    [_normal(2, 3, 4, 5)],
    {},
    (2, 3, 4, 7),
    {},
  ),
  (
    "coordinates_one_hot",
    layers.AppendCoordinates,
    {"encoding": "one_hot"},
    [_normal(2, 3, 4, 5)],
    {},
    (2, 3, 4, 12),
    {},
  ),
  (
    "relative_keypoints",
    layers.RelativeKeypoints,
    {"units": 3},
    [_normal(2, 4, 4, 6)],
    {},
    (2, 4, 4, 6),
    {},
  ),
  (
    "multi_head_attention",
    layers.MultiHeadAttention,
    {"num_heads": 2, "key_dim": 4, "output_dim": 6},
    [_normal(2, 3, 8), _normal(2, 5, 8, seed=1)],
    {},
    (2, 3, 6),
    {},
  ),
  (
    "multi_head_attention_masked",
    layers.MultiHeadAttention,
    {"num_heads": 2, "key_dim": 4},
    [_normal(2, 3, 8), _normal(2, 5, 8, seed=1)],
    {"key_mask": tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]) > 0},
    (2, 3, 8),
    {"keras_file": False},  # the mask is a keyword argument
  ),
  (
    "additive_attention",
    layers.AdditiveAttention,
    {"units": 6},
    [_normal(2, 5, 8), _normal(2, 4, seed=1)],
    {},
    ((2, 8), (2, 5)),  # context, weights
    {},
  ),
  (
    "additive_attention_coverage",
    layers.AdditiveAttention,
    {"units": 6, "coverage": True},
    [_normal(2, 5, 8), _normal(2, 4, seed=1)],
    {"coverage": tf.fill([2, 5], 0.2), "feature_mask": tf.constant([[1, 1, 1, 1, 0]] * 2) > 0},
    ((2, 8), (2, 5)),
    {"keras_file": False},
  ),
  (
    "transformer_encoder_block",
    layers.TransformerEncoderBlock,
    {"num_heads": 2, "mlp_dim": 16},
    [_normal(2, 5, 8)],
    {},
    (2, 5, 8),
    {},
  ),
  (
    "neck",
    neck.Neck,
    {"relative_keypoints": 2, "position_channels": "linear", "blocks": 1, "block_heads": 2},
    [_normal(2, 3, 3, 6)],
    {},
    (2, 9, 12),  # 6 + 2x2 keypoint offsets, then row and column
    {},
  ),
  (
    "small_cnn",
    encoders.SmallCNN,
    {"widths": (4, 8), "strides": (2, 2)},
    [_images(size=16)],
    {},
    (2, 4, 4, 8),
    {},
  ),
  (
    "backbone_mobilenet_v3_small",
    encoders.Backbone,
    {"model": "MobileNetV3Small", "weights": "none", "project_dim": 8},
    [_images(size=64)],
    {},
    (2, 2, 2, 8),
    # The frozen network is float32 by design; only the projection trains.
    {"mixed_tolerance": 0.2},
  ),
  (
    "backbone_efficientnet_b0",
    encoders.Backbone,
    {"model": "EfficientNetB0", "weights": "none", "project_dim": 8},
    [_images(size=64)],
    {},
    (2, 2, 2, 8),
    {"mixed_tolerance": 0.2},
  ),
  (
    "sat_lstm_decoder",
    decoders.ShowAttendTellDecoder,
    {
      "vocab_size": 20,
      "embed_dim": 8,
      "hidden_dim": 12,
      "attention_dim": 6,
      "attention_coverage": True,
      "init_moments": True,
    },
    [_normal(2, 6, 5), _tokens()],
    {},
    {"logits": (2, 5, 20), "attention": (2, 5, 6), "gate": (2, 5)},
    {},
  ),
  (
    "transformer_decoder",
    transformer.TransformerDecoder,
    {"vocab_size": 20, "num_layers": 2, "width": 8, "num_heads": 2, "max_length": 6},
    [_normal(2, 6, 5), _tokens()],
    {},
    {"logits": (2, 5, 20), "attention": (2, 5, 6)},
    {},
  ),
  (
    "transformer_decoder_untied",
    transformer.TransformerDecoder,
    {"vocab_size": 20, "num_layers": 1, "width": 8, "num_heads": 2, "tie_embeddings": False},
    [_normal(2, 6, 5), _tokens()],
    {},
    {"logits": (2, 5, 20), "attention": (2, 5, 6)},
    {},
  ),
]


def test_every_registered_layer_is_covered():
  registered = {
    cls
    for name, cls in keras.saving.get_custom_objects().items()
    if name.startswith("captioning>") and isinstance(cls, type)
    if issubclass(cls, keras.layers.Layer) and not issubclass(cls, keras.Model)
  }
  assert registered <= {case[1] for case in CASES}, registered - {case[1] for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_layer_contract(case):
  _, cls, init_kwargs, args, kwargs, shapes, options = case
  layer = layer_testing.check_layer(
    cls,
    init_kwargs,
    args,
    kwargs,
    expected_shapes=shapes,
    trainable=cls not in (layers.SpatialFlatten, layers.Threshold, layers.AppendCoordinates),
    **options,
  )
  assert layer.built


def test_the_contract_catches_a_layer_that_forgets_an_argument():
  # A layer whose get_config drops a constructor argument fails the serialisation check.
  class Forgetful(layers.Threshold):
    def get_config(self):
      config = super().get_config()
      config.pop("threshold")
      return config

  keras.saving.register_keras_serializable("captioning_tests")(Forgetful)
  with pytest.raises(AssertionError):
    layer_testing.check_layer(Forgetful, {"threshold": 0.9}, [np.full([1, 3], 0.7, "float32")])
