"""Image encoders, chosen by `config.model.encoder.name`: images [B, S, S, 3] -> maps [B, H, W, C].

Adding an encoder: a Keras layer with `@ENCODERS.register("its_name")`, whose constructor takes
the keys of its `config.model.encoder` section.
"""

import keras

from captioning import registry

ENCODERS = registry.Registry("config.model.encoder.name")


@ENCODERS.register("small_cnn")
@keras.saving.register_keras_serializable(package="captioning")
class SmallCNN(keras.layers.Layer):
  """A small Conv2D encoder trained from scratch.

  One ReLU convolution per stage. A stride-s stage with s > 2 is a "patchify" stem (kernel s,
  stride s): it cuts the image to a coarse grid at almost no cost, where a 3x3 convolution at
  full resolution would take most of a CPU's time. Other stages use 3x3 kernels.

  Args:
    widths: channels of each stage; the last is the feature size C.
    strides: stride of each stage; their product is the image-to-feature-map reduction.
    weights: "none": this encoder has no pretrained weights (the argument every encoder takes).
  """

  def __init__(self, widths=(32, 64, 96, 128), strides=(4, 1, 2, 1), weights="none", **kwargs):
    super().__init__(**kwargs)
    if weights != "none":
      raise ValueError(
        f"small_cnn is trained from scratch: weights must be 'none', got {weights!r}"
      )
    self.widths = tuple(int(w) for w in widths)
    self.strides = tuple(int(s) for s in strides)
    if not self.widths or min(self.widths) < 1:
      raise ValueError(f"encoder widths must be positive, got {widths}")
    if len(self.strides) != len(self.widths) or min(self.strides) < 1:
      raise ValueError(f"encoder strides {strides} must be positive, one per width {widths}")
    self.rescale = keras.layers.Rescaling(1.0 / 255.0, offset=-0.5, dtype=self.dtype_policy)
    self.convs = [
      keras.layers.Conv2D(
        width,
        stride if stride > 2 else 3,
        strides=stride,
        padding="same",
        activation="relu",
        kernel_initializer="he_normal",
        name=f"stage{i}",
        dtype=self.dtype_policy,
      )
      for i, (width, stride) in enumerate(zip(self.widths, self.strides))
    ]

  def build(self, input_shape):
    shape = tuple(input_shape)
    for conv in self.convs:
      conv.build(shape)
      shape = conv.compute_output_shape(shape)

  def call(self, images):
    """Maps images [B, S, S, 3] (uint8 or float in 0..255) to features [B, H, W, C]."""
    x = self.rescale(keras.ops.cast(images, self.compute_dtype))
    for conv in self.convs:
      x = conv(x)
    return x

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    for conv in self.convs:
      shape = conv.compute_output_shape(shape)
    return shape

  def get_config(self):
    return {**super().get_config(), "widths": list(self.widths), "strides": list(self.strides)}


def build_encoder(encoder_config, dtype=None):
  """Builds the encoder that `config.model.encoder` names, from the rest of that section.

  Args:
    encoder_config: the `model.encoder` section: `name` and the encoder's own arguments.
    dtype: a Keras dtype policy, or None for the default.
  """
  return ENCODERS.build(encoder_config, "config.model.encoder", name="encoder", dtype=dtype)
