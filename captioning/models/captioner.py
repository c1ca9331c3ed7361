"""The captioner: encoder -> neck -> attention decoder, as one Keras model.

`config.model` has one section per part, and each reaches its constructor whole:

    config.model.encoder = dict(name="small_cnn", weights="none", widths=..., strides=...)
    config.model.neck = dict(relative_keypoints=16, position_channels="linear", blocks=0, ...)
    config.model.decoder = dict(name="sat_lstm", embed_dim=128, hidden_dim=256, ...)

`Captioner(vocab_size, **config.model)` builds the model; the rules that join two sections are
checked in `Captioner.__init__`, and nowhere else.
"""

import json

import keras

from captioning import registry
from captioning.models import decoders
from captioning.models import encoders
from captioning.models import neck as neck_lib

# What a batch may hold an image as: pixels, or a frozen backbone's cached grid.
IMAGE_KEYS = ("image", "features")


@keras.saving.register_keras_serializable(package="captioning")
class Captioner(keras.Model):
  """An image captioner that saves to `.keras` and loads back with identical outputs.

  Inputs are a dict {"image": [B, S, S, 3], "tokens": [B, T]} where `tokens` are the decoder
  inputs (`<start> w1 ... wn`, padded); outputs are the decoder's dict, at least
  {"logits": [B, T, V], "attention": [B, T, L]} with L = H*W feature locations.

  Args:
    vocab_size: output vocabulary size.
    encoder: the `config.model.encoder` section (see `encoders.ENCODERS`).
    neck: the `config.model.neck` section (see `neck.Neck`).
    decoder: the `config.model.decoder` section (see `decoders.DECODERS`).
    output_bias: optional initial output bias [V] (not serialised; weights replace it).
  """

  def __init__(self, vocab_size, encoder, neck, decoder, output_bias=None, **kwargs):
    super().__init__(**kwargs)
    # As they serialise (tuples become lists), so a loaded model's config equals the saved one.
    self.sections = json.loads(
      json.dumps({"encoder": encoder, "neck": neck, "decoder": decoder}, default=registry.plain)
    )
    self.vocab_size = vocab_size
    policy = self.dtype_policy
    self.encoder = encoders.build_encoder(encoder, dtype=policy)
    self.neck = registry.call_with_section(
      neck_lib.Neck, neck, "config.model.neck", name="neck", dtype=policy
    )
    self.decoder = decoders.build_decoder(decoder, vocab_size, output_bias, dtype=policy)
    # The rules that join two sections.
    if self.decoder.needs_linear_coordinates and not self.neck.appends_linear_coordinates:
      raise ValueError(
        "Bad config: config.model.decoder.init_moments needs "
        "config.model.neck.position_channels='linear' (row and column as the last channels)."
      )

  @property
  def feature_map_shape(self):
    """(H, W) of the grid the decoder attends over, for attention pictures."""
    return self.neck.feature_map_shape

  def build(self, input_shape):
    image_shape = tuple(input_shape["image"])
    self.encoder.build(image_shape)
    maps_shape = self.encoder.compute_output_shape(image_shape)
    self.neck.build(maps_shape)
    features_shape = self.neck.compute_output_shape(maps_shape)
    self.decoder.build(features_shape, tuple(input_shape.get("tokens", (image_shape[0], None))))

  def encode(self, images, training=False):
    """Images -> feature sequence [B, H*W, C + P] (features, then P position channels).

    Args:
      images: [B, S, S, 3] pixels, or a dict with "image" (pixels) or "features" (a frozen
        backbone's grid [B, H, W, C] from a feature cache, `features.py`).
    """
    if isinstance(images, dict) and "features" in images:
      if not hasattr(self.encoder, "head"):
        raise ValueError("Cached features need a pretrained backbone encoder.")
      maps = self.encoder.head(images["features"])
    else:
      images = images["image"] if isinstance(images, dict) else images
      maps = self.encoder(images, training=training)
    return self.neck(maps, training=training)

  def call(self, inputs, training=False):
    """inputs: {"image" [B, S, S, 3] or "features" [B, H, W, C], "tokens" [B, T]}."""
    images = {k: v for k, v in inputs.items() if k in IMAGE_KEYS}
    return self.decoder(self.encode(images, training=training), inputs["tokens"], training=training)

  def get_config(self):
    return {
      "name": self.name,
      "dtype": keras.dtype_policies.serialize(self.dtype_policy),
      "vocab_size": self.vocab_size,
      **self.sections,
    }


def build_captioner(model_config, vocab_size, output_bias=None, dtype=None):
  """Builds an unbuilt Captioner from `config.model`.

  Args:
    model_config: the `model` section of a config: `encoder`, `neck` and `decoder`.
    vocab_size: tokenizer vocabulary size.
    output_bias: optional initial output bias [vocab_size].
    dtype: optional Keras dtype policy name (e.g. "mixed_bfloat16").
  """
  return registry.call_with_section(
    Captioner,
    model_config,
    "config.model",
    vocab_size=vocab_size,
    output_bias=output_bias,
    dtype=dtype,
    name="captioner",
  )
