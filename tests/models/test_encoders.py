"""Encoders by name: the small CNN and the keras.applications backbones (weights "none": no
test downloads anything)."""

import keras
import numpy as np
import pytest

from captioning.models import encoders
import helpers

# The grid each backbone documents, at its usual image size.
GRIDS = {
  "resnet50": (224, (7, 7, 2048)),
  "inception_v3": (299, (8, 8, 2048)),
  "efficientnet_b0": (224, (7, 7, 1280)),
  "efficientnet_b1": (240, (8, 8, 1280)),
  "efficientnet_b2": (260, (9, 9, 1408)),
  "efficientnet_b3": (300, (10, 10, 1536)),
  "mobilenet_v3_small": (224, (7, 7, 576)),
  "mobilenet_v3_large": (224, (7, 7, 960)),
  "convnext_tiny": (224, (7, 7, 768)),
}


def test_every_backbone_is_listed_here():
  assert sorted(GRIDS) == sorted(encoders.BACKBONES)
  assert set(encoders.ENCODERS.names()) == {"small_cnn", *encoders.BACKBONES}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_backbone_builds_without_weights_gives_its_grid_and_keras_preprocessing(name):
  size, grid = GRIDS[name]
  encoder = encoders.build_encoder({"name": name, "weights": "none"})
  assert encoder.compute_output_shape((None, size, size, 3)) == (None, *grid)
  images = np.random.RandomState(0).randint(0, 256, (2, 8, 8, 3)).astype("float32")
  cls, module, _ = encoders.BACKBONES[name]
  # Exactly what keras.applications prescribes for this model, and never twice: models that
  # preprocess inside get raw pixels, and their preprocess_input is the identity too.
  expected = getattr(keras.applications, module).preprocess_input(images.copy())
  np.testing.assert_allclose(encoder.preprocessed(images), expected, atol=1e-5)
  assert not encoder.network.trainable and not encoder.trainable_weights
  assert encoder.network.name.lower().startswith(cls.lower()[:6])


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_backbone_captioner_round_trip(tmp_path, name):
  model = helpers.tiny_captioner(
    image_size=64, encoder={"name": name, "weights": "none", "project_dim": 16}
  )
  images = np.random.RandomState(1).randint(0, 256, (2, 64, 64, 3)).astype("uint8")
  batch = {"image": images, "tokens": np.ones([2, 4], np.int32)}
  expected = model(batch)["logits"].numpy()
  assert model.encode(images).shape == (2, 4, 18)  # 2x2 grid at 64 px, 16 + row, column
  path = str(tmp_path / "model.keras")
  model.save(path)
  restored = keras.saving.load_model(path)
  np.testing.assert_allclose(restored(batch)["logits"].numpy(), expected, atol=1e-5)
  assert restored.get_config() == model.get_config()


def test_fine_tuning_unfreezes_the_top_layers_but_never_batchnorm():
  encoder = encoders.build_encoder({"name": "mobilenet_v3_small", "weights": "none"})
  encoder.build((None, 64, 64, 3))
  assert not encoder.trainable_weights
  variables = encoder.fine_tune_variables(3)
  assert variables and {id(v) for v in variables} == {id(v) for v in encoder.trainable_weights}
  tuned = [layer for layer in encoder.network.layers if layer.trainable and layer.weights]
  assert len(tuned) == 3 and not any(
    isinstance(layer, keras.layers.BatchNormalization) for layer in tuned
  )
  assert tuned[-1] is [layer for layer in encoder.network.layers if layer.weights][-1] or (
    isinstance(
      [la for la in encoder.network.layers if la.weights][-1], keras.layers.BatchNormalization
    )
  )
  assert encoder.fine_tune_variables(0) == [] and not encoder.trainable_weights


def test_bad_encoder_settings_are_named():
  with pytest.raises(ValueError, match=r"config\.model\.encoder\.model is set by the code"):
    encoders.build_encoder({"name": "resnet50", "model": "VGG16"})
  with pytest.raises(ValueError, match="weights: no file at"):
    encoders.build_encoder({"name": "resnet50", "weights": "/nowhere/resnet.weights.h5"})
  with pytest.raises(ValueError, match="project_dim must be"):
    encoders.build_encoder({"name": "resnet50", "project_dim": -1})
  with pytest.raises(ValueError, match="trained from scratch"):
    encoders.build_encoder({"name": "small_cnn", "weights": "imagenet"})
