"""Between encoder and decoder: the feature grid gets its position signals and becomes a sequence.

`config.model.neck` reaches `Neck` whole. The grid [B, H, W, C] always reaches the decoder
through the raw-op reshape of `layers.SpatialFlatten`.
"""

import keras
import tensorflow as tf

from captioning.models import layers

POSITION_CHANNELS = ("linear", "one_hot", "none")


@keras.saving.register_keras_serializable(package="captioning")
class Neck(keras.layers.Layer):
  """Feature maps [B, H, W, C] -> a feature sequence [B, H*W, C + P], position channels last.

  In order: optional relative keypoints are appended to the maps (`layers.RelativeKeypoints`:
  where the image's salient features lie relative to each location), learned row and column
  embeddings are added (`layers.PositionEmbedding2D`), each location's row and column are
  appended (`layers.AppendCoordinates`, P channels), the grid is flattened to a sequence, and
  optional Transformer encoder blocks let every location see every other one. The blocks read
  the position channels but update only the features, so the position channels stay exact.

  Args:
    relative_keypoints: keypoint channels of `layers.RelativeKeypoints`; 0 for none.
    position_channels: how rows and columns are appended: "linear" (two channels in [-1, 1]),
      "one_hot" (H + W channels), or "none": the features alone, as in Show, Attend and Tell
      (then without the learned row and column embeddings either).
    blocks: Transformer encoder blocks over the sequence; 0 for none.
    block_heads: attention heads of each block.
    block_dropout: dropout on the blocks' attention and MLP outputs in training.
  """

  def __init__(
    self,
    relative_keypoints=0,
    position_channels="linear",
    blocks=0,
    block_heads=4,
    block_dropout=0.0,
    **kwargs,
  ):
    super().__init__(**kwargs)
    for name, value in (("relative_keypoints", relative_keypoints), ("blocks", blocks)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if not isinstance(block_heads, int) or block_heads < 1:
      raise ValueError(f"block_heads must be an integer >= 1, got {block_heads!r}")
    if not 0.0 <= block_dropout < 1.0:
      raise ValueError(f"block_dropout must be in [0, 1), got {block_dropout}")
    self.relative_keypoints = relative_keypoints
    self.position_channels = position_channels
    self.num_blocks = blocks
    self.block_heads = block_heads
    self.block_dropout = block_dropout
    policy = self.dtype_policy
    self.relative = (
      layers.RelativeKeypoints(relative_keypoints, name="relative_keypoints", dtype=policy)
      if relative_keypoints
      else None
    )
    if position_channels not in POSITION_CHANNELS:
      raise ValueError(
        f"position_channels must be one of {POSITION_CHANNELS}, got {position_channels!r}"
      )
    # "none": no position signal at all, neither appended nor learned (the paper's SAT; and a
    # frozen feature cache then needs no gradient).
    self.position = self.coordinates = None
    if position_channels != "none":
      self.position = layers.PositionEmbedding2D(name="position", dtype=policy)
      self.coordinates = layers.AppendCoordinates(
        position_channels, name="coordinates", dtype=policy
      )
    self.flatten = layers.SpatialFlatten(name="flatten", dtype=policy)
    self.blocks = [
      layers.TransformerEncoderBlock(
        block_heads, dropout=block_dropout, name=f"block{i}", dtype=policy
      )
      for i in range(blocks)
    ]
    self.feature_map_shape = None  # (H, W), known in build

  @property
  def appends_linear_coordinates(self):
    """Whether the last two channels of the output are each location's (row, column)."""
    return self.position_channels == "linear"

  def _maps_shape(self, maps_shape):
    maps_shape = tuple(maps_shape)
    if self.relative is None:
      return maps_shape
    extra = self.relative.compute_output_shape(maps_shape)[-1]
    return maps_shape[:-1] + (maps_shape[-1] + extra,)

  def _coordinates_shape(self, maps_shape):
    if self.coordinates is None:
      return tuple(maps_shape)
    return self.coordinates.compute_output_shape(maps_shape)

  def build(self, maps_shape):
    maps_shape = tuple(maps_shape)
    if self.relative is not None:
      self.relative.build(maps_shape)
    maps_shape = self._maps_shape(maps_shape)
    if self.position is not None:
      self.position.build(maps_shape)
    self.feature_map_shape = tuple(maps_shape[1:3])
    b, h, w, c = self._coordinates_shape(maps_shape)
    for block in self.blocks:
      block.build((b, h * w, c))

  def call(self, maps, training=False):
    """Maps [B, H, W, C] -> sequence [B, H*W, C' + P] (C' = C plus keypoint offsets)."""
    if self.relative is not None:
      maps = tf.concat([maps, self.relative(maps)], axis=-1)
    if self.position is not None:
      maps = self.position(maps)
    positioned = maps if self.coordinates is None else self.coordinates(maps)
    sequence = self.flatten(positioned)  # [B, L, C' + P]
    if self.blocks:
      channels = tf.shape(maps)[-1]
      features = sequence
      for block in self.blocks:
        features = block(features, training=training)
      sequence = tf.concat([features[..., :channels], sequence[..., channels:]], axis=-1)
    return sequence

  def compute_output_shape(self, maps_shape):
    b, h, w, c = self._coordinates_shape(self._maps_shape(maps_shape))
    return (b, None if h is None or w is None else h * w, c)

  def get_config(self):
    return {
      **super().get_config(),
      "relative_keypoints": self.relative_keypoints,
      "position_channels": self.position_channels,
      "blocks": self.num_blocks,
      "block_heads": self.block_heads,
      "block_dropout": self.block_dropout,
    }
