"""The whole captioner: output shapes, config sections, the .keras round trip."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import captioner
from captioning.models import encoders
import helpers


def inputs(batch=3, steps=6, seed=0):
  rng = np.random.RandomState(seed)
  return {
    "image": rng.randint(0, 256, (batch, 32, 32, 3)).astype("uint8"),
    "tokens": rng.randint(1, 20, (batch, steps)).astype("int32"),
  }


def test_output_shapes_and_attention():
  model = helpers.tiny_captioner()
  out = model(inputs())
  assert model.feature_map_shape == (8, 8)
  assert out["logits"].shape == (3, 6, 20)
  assert out["attention"].shape == (3, 6, 64)  # [B, T, H*W]
  assert model.encode(inputs()["image"]).shape == (3, 64, 18)  # 16 channels + row, column
  assert out["gate"].shape == (3, 6)
  np.testing.assert_allclose(out["attention"].numpy().sum(-1), 1.0, atol=1e-5)
  assert np.all((out["gate"].numpy() > 0) & (out["gate"].numpy() < 1))


def test_output_bias_starts_from_prior():
  bias = np.linspace(-1, 1, 20).astype("float32")
  model = helpers.tiny_captioner(output_bias=bias)
  np.testing.assert_allclose(model.decoder.logits.bias.numpy(), bias)


def test_dropout_only_in_training():
  model = helpers.tiny_captioner(decoder={"dropout": 0.5})
  batch = inputs()
  a, b = model(batch)["logits"].numpy(), model(batch)["logits"].numpy()
  np.testing.assert_array_equal(a, b)
  c = model(batch, training=True)["logits"].numpy()
  assert not np.allclose(a, c)


@pytest.mark.parametrize(
  "neck,decoder",
  [
    ({}, {}),
    ({}, {"attention_coverage": True}),
    ({"blocks": 2}, {"attention_gate": False}),
    ({"relative_keypoints": 4}, {"init_moments": True}),
  ],
)
def test_keras_file_round_trip(tmp_path, neck, decoder):
  model = helpers.tiny_captioner(neck=neck, decoder=decoder)
  batch = inputs()
  expected = model(batch)
  path = str(tmp_path / "captioner.keras")
  model.save(path)
  restored = keras.saving.load_model(path)
  assert isinstance(restored, captioner.Captioner)
  assert restored.get_config() == model.get_config()
  got = restored(batch)
  for key in ("logits", "attention", "gate"):
    np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


# What the README says: `import captioning.models`, then keras.saving.load_model, nothing else.
# argv: pairs of (model file, where its logits go).
_LOAD_IN_FRESH_PROCESS = """
import sys
import keras
import numpy as np
import captioning.models
for path, logits in zip(sys.argv[1::2], sys.argv[2::2]):
  model = keras.saving.load_model(path)
  batch = {"image": np.full([2, 32, 32, 3], 100, np.uint8), "tokens": np.ones([2, 4], np.int32)}
  np.save(logits, np.asarray(model(batch)["logits"], np.float32))
  print(model.dtype_policy.name)
"""


TINY_TRANSFORMER = {"name": "transformer", "num_layers": 1, "width": 16, "num_heads": 2}


def test_model_files_load_in_a_fresh_process_as_documented(tmp_path):
  # One process loads all three (most of its time is starting TensorFlow). The first has the
  # neck's relative keypoints and an output bias, as the shapes configs do.
  variants = [
    {"neck": {"relative_keypoints": 4}, "output_bias": np.linspace(-1, 1, 20)},
    {"dtype": "mixed_bfloat16"},
    {"dtype": "mixed_bfloat16", "decoder": TINY_TRANSFORMER},
  ]
  models, args = [], []
  for k, variant in enumerate(variants):
    models.append(helpers.tiny_captioner(**variant))
    args += [str(tmp_path / f"model{k}.keras"), str(tmp_path / f"logits{k}.npy")]
    models[-1].save(args[-2])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=helpers.ROOT)
  result = subprocess.run(
    [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, *args],
    cwd=str(tmp_path),  # not the repository: only what the README says is imported
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-3:] == [v.get("dtype", "float32") for v in variants]
  batch = {"image": np.full([2, 32, 32, 3], 100, np.uint8), "tokens": np.ones([2, 4], np.int32)}
  for model, logits in zip(models, args[1::2], strict=True):
    # Close, not equal: under `make test` this process runs one thread of ops and the fresh one
    # the default, which may split sums differently.
    np.testing.assert_allclose(
      np.load(logits),
      np.asarray(model(batch)["logits"], np.float32),
      rtol=1e-5,
      atol=1e-6,
      err_msg=logits,
    )


def test_sections_are_checked_against_their_constructors():
  with pytest.raises(ValueError, match=r"unknown config\.model\.encoder\.name 'vgg_from_the_fu"):
    helpers.tiny_captioner(encoder={"name": "vgg_from_the_future"})
  with pytest.raises(ValueError, match=r"config\.model\.encoder: small_cnn is trained from"):
    helpers.tiny_captioner(encoder={"weights": "/weights/backbone.h5"})
  with pytest.raises(ValueError, match=r"unknown config\.model\.decoder\.name 'gru'"):
    helpers.tiny_captioner(decoder={"name": "gru"})
  with pytest.raises(ValueError, match=r"config\.model\.decoder\.num_layers is not an argument"):
    helpers.tiny_captioner(decoder={"num_layers": 1})
  with pytest.raises(ValueError, match=r"config\.model\.neck\.heads is not an argument of Neck"):
    helpers.tiny_captioner(neck={"heads": 2})
  with pytest.raises(ValueError, match=r"config\.model\.decoder lacks hidden_dim"):
    sections = helpers.model_sections()
    del sections["decoder"]["hidden_dim"]
    captioner.build_captioner(sections, vocab_size=10)
  with pytest.raises(ValueError, match=r"config\.model\.decoder: dropout must be in \[0, 1\)"):
    helpers.tiny_captioner(decoder={"dropout": 1.5})
  # The rule that joins two sections.
  with pytest.raises(ValueError, match=r"init_moments needs config\.model\.neck\.position_"):
    helpers.tiny_captioner(neck={"position_channels": "one_hot"}, decoder={"init_moments": True})
  assert isinstance(
    encoders.build_encoder({"name": "small_cnn", "weights": "none"}), encoders.SmallCNN
  )


def test_gradients_reach_every_variable():
  model = helpers.tiny_captioner(neck={"relative_keypoints": 3, "blocks": 1})
  batch = inputs()
  with tf.GradientTape() as tape:
    out = model(batch, training=True)
    loss = tf.reduce_mean(out["logits"] ** 2) + tf.reduce_mean(out["attention"] ** 2)
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
  assert not missing


def test_attention_gate_can_be_turned_off():
  model = helpers.tiny_captioner(decoder={"attention_gate": False})
  out = model(inputs())
  np.testing.assert_array_equal(out["gate"].numpy(), 1.0)
  assert not [v for v in model.weights if "gate" in v.path]
  gated = helpers.tiny_captioner()
  assert [v for v in gated.weights if "gate" in v.path]
