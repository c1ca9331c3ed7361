"""Image encoders, chosen by `config.model.encoder.name`: images [B, S, S, 3] -> maps [B, H, W, C].

Adding an encoder: a Keras layer with `@ENCODERS.register("its_name")`, whose constructor takes
the keys of its `config.model.encoder` section.
"""

import os

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


# keras.applications backbones by config name: (class, its module, what its preprocess_input
# does). Models whose preprocessing is inside the Keras model ("inside") get [0, 255] pixels
# and no preprocessing of ours, so nothing is preprocessed twice.
BACKBONES = {
  "resnet50": ("ResNet50", "resnet50", "caffe"),  # BGR, ImageNet means subtracted
  "inception_v3": ("InceptionV3", "inception_v3", "tf"),  # scaled to [-1, 1]
  "efficientnet_b0": ("EfficientNetB0", "efficientnet", "inside"),
  "efficientnet_b1": ("EfficientNetB1", "efficientnet", "inside"),
  "efficientnet_b2": ("EfficientNetB2", "efficientnet", "inside"),
  "efficientnet_b3": ("EfficientNetB3", "efficientnet", "inside"),
  "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3", "inside"),
  "mobilenet_v3_large": ("MobileNetV3Large", "mobilenet_v3", "inside"),
  "convnext_tiny": ("ConvNeXtTiny", "convnext", "inside"),
}


@keras.saving.register_keras_serializable(package="captioning")
class Backbone(keras.layers.Layer):
  """A `keras.applications` image backbone: images [B, S, S, 3] (0..255) -> its last conv grid.

  ResNet50 gives 7x7x2048 at 224 px, InceptionV3 8x8x2048 at 299, EfficientNetB0 7x7x1280,
  MobileNetV3Small 7x7x576, MobileNetV3Large 7x7x960 and ConvNeXtTiny 7x7x768 at 224. Each gets
  its own preprocessing (`keras.applications.<module>.preprocess_input`). The backbone always
  runs in inference mode (BatchNorm keeps its ImageNet statistics), and starts frozen; the
  trainer unfreezes its top layers for fine-tuning (`fine_tune_variables`).

  Args:
    model: the keras.applications class name, fixed by the config name (BACKBONES).
    weights: "imagenet" (downloaded by Keras on first use), a path to a weights file of the
      backbone (`.weights.h5`), or "none" for random initialisation (no download).
    project_dim: if > 0, a 1x1 projection of the grid to this many channels (e.g. the decoder
      width), trained with the captioner.
  """

  def __init__(self, model, weights="none", project_dim=0, **kwargs):
    super().__init__(**kwargs)
    known = {cls for cls, _, _ in BACKBONES.values()}
    if model not in known:
      raise ValueError(f"model must be one of {sorted(known)}, got {model!r}")
    if not isinstance(weights, str) or not weights:
      raise ValueError(f"weights must be 'imagenet', 'none' or a path, got {weights!r}")
    if weights not in ("imagenet", "none") and not os.path.exists(os.path.expanduser(weights)):
      raise ValueError(f"weights: no file at {weights!r} (or use 'imagenet' or 'none')")
    if isinstance(project_dim, bool) or not isinstance(project_dim, int) or project_dim < 0:
      raise ValueError(f"project_dim must be an integer >= 0, got {project_dim!r}")
    self.model_name, self.weights_source, self.project_dim = model, weights, project_dim
    self._load_weights = weights != "none"
    module = next(m for cls, m, _ in BACKBONES.values() if cls == model)
    self.preprocessing = next(p for cls, _, p in BACKBONES.values() if cls == model)
    self.preprocess = getattr(keras.applications, module).preprocess_input
    self.network = None  # built for the image size, in build
    self.project = (
      keras.layers.Dense(project_dim, name="project", dtype=self.dtype_policy)
      if project_dim
      else None
    )

  def build(self, input_shape):
    _, height, width, _ = input_shape
    weights = None
    if self._load_weights:
      weights = "imagenet" if self.weights_source == "imagenet" else None
    self.network = getattr(keras.applications, self.model_name)(
      include_top=False, weights=weights, input_shape=(height, width, 3)
    )
    if self._load_weights and self.weights_source != "imagenet":
      self.network.load_weights(os.path.expanduser(self.weights_source))
    self.network.trainable = False  # frozen until fine-tuning unfreezes its top layers
    if self.project is not None:
      self.project.build(self.network.output_shape)

  def preprocessed(self, images):
    """Images [B, S, S, 3] in 0..255 as this backbone's network wants them (float32)."""
    images = keras.ops.cast(images, "float32")
    return images if self.preprocessing == "inside" else self.preprocess(images)

  def frozen_maps(self, images):
    """The frozen network's grid [B, H, W, C] (float32): what a feature cache stores."""
    return self.network(self.preprocessed(images), training=False)

  def head(self, maps):
    """The trained part on top of the frozen grid: the projection, if any."""
    maps = keras.ops.cast(maps, self.compute_dtype)
    return maps if self.project is None else self.project(maps)

  def call(self, images):
    return self.head(self.frozen_maps(images))

  def compute_output_shape(self, input_shape):
    if self.network is None:
      self.build(input_shape)
    shape = self.network.output_shape
    return shape if self.project is None else shape[:-1] + (self.project_dim,)

  def fine_tune_variables(self, num_layers):
    """Makes the top `num_layers` weighted layers of the network trainable (BatchNorm layers
    stay frozen, in inference mode) and returns their variables."""
    weighted = [
      layer
      for layer in self.network.layers
      if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    chosen = weighted[len(weighted) - num_layers :] if num_layers else []
    self.network.trainable = bool(chosen)
    for layer in self.network.layers:
      layer.trainable = layer in chosen
    return [v for layer in chosen for v in layer.trainable_weights]

  def get_config(self):
    return {
      **super().get_config(),
      "model": self.model_name,
      "weights": self.weights_source,
      "project_dim": self.project_dim,
    }

  @classmethod
  def from_config(cls, config):
    # A saved model brings its own weights: building it must not download or read others.
    layer = cls(**{**config, "weights": "none"})
    layer.weights_source = config["weights"]
    return layer


for _name, (_cls, _, _) in BACKBONES.items():
  ENCODERS.register(_name, model=_cls)(Backbone)
