"""The captioner: encoder -> feature sequence -> attention decoder, as one Keras model."""

import keras
import tensorflow as tf

from captioning.models import decoders
from captioning.models import encoders
from captioning.models import layers


@keras.saving.register_keras_serializable(package="captioning")
class Captioner(keras.Model):
  """An image captioner that saves to `.keras` and loads back with identical outputs.

  Inputs are a dict {"image": [B, S, S, 3], "tokens": [B, T]} where `tokens` are the decoder
  inputs (`<start> w1 ... wn`, padded); outputs are a dict {"logits": [B, T, V],
  "attention": [B, T, L], "gate": [B, T]}, with L = H*W feature locations.

  Args:
    vocab_size: output vocabulary size.
    encoder: encoder name (see `encoders.build_encoder`).
    encoder_widths, encoder_strides: stage widths and strides of the encoder.
    encoder_weights: pretrained encoder weights (None trains from scratch).
    decoder: decoder name (see `decoders.build_decoder`).
    embed_dim, hidden_dim, attention_dim, num_heads, num_layers, dropout: decoder sizes.
    attention_coverage: let the attention see how much each location was attended so far.
    init_dropout: training-time probability of starting the decoder without the mean feature.
    init_moments: also start it from the features' spatial moments (see the decoder).
    position_channels: how locations' rows and columns are appended to the features
      ("linear" or "one_hot", see `layers.AppendCoordinates`).
    encoder_blocks: Transformer encoder blocks (`layers.TransformerEncoderBlock`, num_heads
      heads, dropout as above) over the feature locations before the decoder attends to them.
    attention_gate: use Xu et al.'s gating scalar on the attended context (else beta = 1).
    relative_keypoints: units of `layers.RelativeKeypoints` appended to the encoder's feature maps
      (where the image's features lie relative to each location); 0 for none.
    output_bias: optional initial output bias [V] (not serialised; weights replace it).
  """

  def __init__(
    self,
    vocab_size,
    encoder="small_cnn",
    encoder_widths=(32, 64, 96, 128),
    encoder_strides=(4, 1, 2, 1),
    encoder_weights=None,
    decoder="sat_lstm",
    embed_dim=128,
    hidden_dim=256,
    attention_dim=128,
    num_heads=4,
    num_layers=1,
    dropout=0.0,
    attention_coverage=False,
    init_dropout=0.0,
    init_moments=False,
    position_channels="linear",
    encoder_blocks=0,
    attention_gate=True,
    relative_keypoints=0,
    output_bias=None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.hparams = dict(
      vocab_size=vocab_size,
      encoder=encoder,
      encoder_widths=list(encoder_widths),
      encoder_strides=list(encoder_strides),
      encoder_weights=encoder_weights,
      decoder=decoder,
      embed_dim=embed_dim,
      hidden_dim=hidden_dim,
      attention_dim=attention_dim,
      num_heads=num_heads,
      num_layers=num_layers,
      dropout=dropout,
      attention_coverage=attention_coverage,
      init_dropout=init_dropout,
      init_moments=init_moments,
      position_channels=position_channels,
      encoder_blocks=encoder_blocks,
      attention_gate=attention_gate,
      relative_keypoints=relative_keypoints,
    )
    if init_moments and position_channels != "linear":
      raise ValueError("init_moments needs position_channels='linear' (row, column last).")
    policy = self.dtype_policy
    self.encoder = encoders.build_encoder(
      encoder, widths=encoder_widths, strides=encoder_strides, weights=encoder_weights, dtype=policy
    )
    self.relative = (
      layers.RelativeKeypoints(relative_keypoints, name="relative_keypoints", dtype=policy)
      if relative_keypoints
      else None
    )
    self.position = layers.PositionEmbedding2D(name="position", dtype=policy)
    self.blocks = [
      layers.TransformerEncoderBlock(num_heads, dropout=dropout, name=f"block{i}", dtype=policy)
      for i in range(int(encoder_blocks))
    ]
    self.coordinates = layers.AppendCoordinates(position_channels, name="coordinates", dtype=policy)
    self.flatten = layers.SpatialFlatten(name="flatten", dtype=policy)
    self.decoder = decoders.build_decoder(
      decoder,
      vocab_size=vocab_size,
      embed_dim=embed_dim,
      hidden_dim=hidden_dim,
      attention_dim=attention_dim,
      num_heads=num_heads,
      num_layers=num_layers,
      dropout=dropout,
      coverage=attention_coverage,
      init_dropout=init_dropout,
      init_moments=init_moments,
      gate=attention_gate,
      output_bias=output_bias,
      dtype=policy,
    )

  def build(self, input_shape):
    image_shape = tuple(input_shape["image"])
    self.encoder.build(image_shape)
    maps_shape = self.encoder.compute_output_shape(image_shape)
    if self.relative is not None:
      self.relative.build(maps_shape)
      extra = self.relative.compute_output_shape(maps_shape)[-1]
      maps_shape = tuple(maps_shape[:-1]) + (maps_shape[-1] + extra,)
    self.position.build(maps_shape)
    self.feature_map_shape = tuple(maps_shape[1:3])  # (H, W), for attention pictures
    b, h, w, c = self.coordinates.compute_output_shape(maps_shape)
    for block in self.blocks:
      block.build((b, h * w, c))
    self.decoder.build((b, h * w, c), tuple(input_shape.get("tokens", (b, None))))

  def encode(self, images, training=False):
    """Images [B, S, S, 3] -> feature sequence [B, H*W, C + P] (features, then P position
    channels)."""
    maps = self.encoder(images, training=training)  # [B, H, W, C]
    if self.relative is not None:
      maps = tf.concat([maps, self.relative(maps)], axis=-1)
    maps = self.position(maps)
    sequence = self.flatten(self.coordinates(maps))  # [B, L, C + P]
    if self.blocks:
      # The blocks read the position channels but update only the features, so the position
      # channels stay exact (the decoder's init_moments relies on them).
      channels = tf.shape(maps)[-1]
      features = sequence
      for block in self.blocks:
        features = block(features, training=training)
      sequence = tf.concat([features[..., :channels], sequence[..., channels:]], axis=-1)
    return sequence

  def call(self, inputs, training=False):
    features = self.encode(inputs["image"], training=training)
    return self.decoder(features, inputs["tokens"], training=training)

  def get_config(self):
    # Keras' own Model config (name, trainable) is not needed to rebuild a subclassed model.
    return {"name": self.name, **self.hparams}


def build_captioner(model_config, vocab_size, output_bias=None, dtype=None):
  """Builds an unbuilt Captioner from `config.model`.

  Args:
    model_config: the `model` section of a config.
    vocab_size: tokenizer vocabulary size.
    output_bias: optional initial output bias [vocab_size].
    dtype: optional Keras dtype policy name (e.g. "mixed_float16").
  """
  return Captioner(
    vocab_size=vocab_size,
    encoder=model_config.encoder,
    encoder_widths=tuple(model_config.encoder_widths),
    encoder_strides=tuple(model_config.encoder_strides),
    encoder_weights=model_config.encoder_weights,
    decoder=model_config.decoder,
    embed_dim=model_config.embed_dim,
    hidden_dim=model_config.hidden_dim,
    attention_dim=model_config.attention_dim,
    num_heads=model_config.num_heads,
    num_layers=model_config.num_layers,
    dropout=model_config.dropout,
    attention_coverage=model_config.get("attention_coverage", False),
    init_dropout=model_config.get("init_dropout", 0.0),
    init_moments=model_config.get("init_moments", False),
    position_channels=model_config.get("position_channels", "linear"),
    encoder_blocks=model_config.get("encoder_blocks", 0),
    attention_gate=model_config.get("attention_gate", True),
    relative_keypoints=model_config.get("relative_keypoints", 0),
    output_bias=output_bias,
    dtype=dtype,
    name="captioner",
  )
