"""The whole captioner: output shapes, the decoder's step/call agreement, .keras round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import captioner
from captioning.models import encoders


def small_captioner(**overrides):
  kwargs = dict(
    vocab_size=20,
    encoder_widths=(8, 16),
    encoder_strides=(2, 2),
    embed_dim=16,
    hidden_dim=24,
    attention_dim=12,
    dropout=0.3,
    output_bias=np.linspace(-1, 1, 20),
  )
  kwargs.update(overrides)
  model = captioner.Captioner(**kwargs)
  model.build({"image": (None, 32, 32, 3), "tokens": (None, None)})
  return model


def inputs(batch=3, steps=6, seed=0):
  rng = np.random.RandomState(seed)
  return {
    "image": rng.randint(0, 256, (batch, 32, 32, 3)).astype("uint8"),
    "tokens": rng.randint(1, 20, (batch, steps)).astype("int32"),
  }


def test_output_shapes_and_attention():
  model = small_captioner()
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
  model = small_captioner(output_bias=bias)
  np.testing.assert_allclose(model.decoder.logits.bias.numpy(), bias)


@pytest.mark.parametrize("coverage", [False, True])
def test_teacher_forcing_matches_step_by_step_decoding(coverage):
  model = small_captioner(attention_coverage=coverage)
  batch = inputs()
  full = model(batch, training=False)
  features = model.encode(batch["image"])
  projected = model.decoder.precompute(features)
  state = model.decoder.initial_state(features)
  for t in range(batch["tokens"].shape[1]):
    logits, state, alpha, _ = model.decoder.step(batch["tokens"][:, t], state, features, projected)
    np.testing.assert_allclose(logits.numpy(), full["logits"].numpy()[:, t], atol=1e-4)
    np.testing.assert_allclose(alpha.numpy(), full["attention"].numpy()[:, t], atol=1e-5)


def test_dropout_only_in_training():
  model = small_captioner(dropout=0.5)
  batch = inputs()
  a, b = model(batch)["logits"].numpy(), model(batch)["logits"].numpy()
  np.testing.assert_array_equal(a, b)
  c = model(batch, training=True)["logits"].numpy()
  assert not np.allclose(a, c)


@pytest.mark.parametrize(
  "coverage,blocks,gate,moments",
  [(False, 0, True, 0), (True, 0, True, 0), (False, 2, False, 0), (False, 0, True, 4)],
)
def test_keras_file_round_trip(tmp_path, coverage, blocks, gate, moments):
  model = small_captioner(
    attention_coverage=coverage,
    encoder_blocks=blocks,
    attention_gate=gate,
    relative_keypoints=moments,
  )
  batch = inputs()
  expected = model(batch)
  path = str(tmp_path / "captioner.keras")
  model.save(path)
  restored = keras.saving.load_model(path)
  assert isinstance(restored, captioner.Captioner)
  got = restored(batch)
  for key in ("logits", "attention", "gate"):
    np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


def test_unknown_encoder_and_pretrained_small_cnn_are_rejected():
  with pytest.raises(ValueError, match="Unknown encoder"):
    captioner.Captioner(vocab_size=10, encoder="vgg_from_the_future")
  with pytest.raises(ValueError, match="trained from scratch"):
    encoders.build_encoder("small_cnn", weights="/weights/backbone.h5")
  with pytest.raises(ValueError, match="Unknown decoder"):
    captioner.Captioner(vocab_size=10, decoder="gru")


def test_gradients_reach_every_variable():
  model = small_captioner()
  batch = inputs()
  with tf.GradientTape() as tape:
    out = model(batch, training=True)
    loss = tf.reduce_mean(out["logits"] ** 2) + tf.reduce_mean(out["attention"] ** 2)
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
  assert not missing


def test_coverage_accumulates_attention():
  model = small_captioner(attention_coverage=True)
  batch = inputs()
  features = model.encode(batch["image"])
  state = model.decoder.initial_state(features)
  projected = model.decoder.precompute(features)
  total = np.zeros([3, 64], np.float32)
  for t in range(3):
    _, state, alpha, _ = model.decoder.step(batch["tokens"][:, t], state, features, projected)
    total += alpha.numpy()
  np.testing.assert_allclose(state[2].numpy(), total, atol=1e-5)
  with pytest.raises(ValueError, match="pass `coverage`"):
    model.decoder.attention(features, state[0])


def test_init_dropout_drops_whole_examples_only_in_training():
  model = small_captioner(init_dropout=0.5)
  features = model.encode(inputs(batch=64)["image"])
  h_eval = model.decoder.initial_state(features)[0].numpy()
  h_train = model.decoder.initial_state(features, training=True)[0].numpy()
  h_empty = np.tanh(model.decoder.init_h.bias.numpy())  # the state of a dropped example
  dropped = np.all(np.isclose(h_train, h_empty, atol=1e-6), axis=1)
  assert 10 < dropped.sum() < 54  # about half of 64
  kept = ~dropped
  # Kept examples see the mean scaled by nothing else: identical to evaluation.
  np.testing.assert_allclose(h_train[kept], h_eval[kept], atol=1e-6)
  np.testing.assert_array_equal(model.decoder.initial_state(features)[0].numpy(), h_eval)


def test_initial_state_sees_the_layout_with_moments():
  features = tf.random.normal([1, 4, 6], seed=3)
  coords = tf.constant([[[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]])
  layout = tf.concat([features, coords], -1)  # 4 locations, (row, column) last
  swapped = tf.concat([tf.reverse(features, [1]), coords], -1)  # same contents, moved
  model = captioner.Captioner(
    vocab_size=5, embed_dim=4, hidden_dim=6, attention_dim=3, init_moments=True
  )
  model.decoder.build((None, 4, 8), (None, None))
  h = [model.decoder.initial_state(x)[0].numpy() for x in (layout, swapped)]
  assert np.abs(h[0] - h[1]).max() > 1e-4  # the mean is the same; the moments are not
  plain = captioner.Captioner(vocab_size=5, embed_dim=4, hidden_dim=6, attention_dim=3)
  plain.decoder.build((None, 4, 8), (None, None))
  h = [plain.decoder.initial_state(x)[0].numpy() for x in (layout, swapped)]
  np.testing.assert_allclose(h[0], h[1], atol=1e-6)
  with pytest.raises(ValueError, match="init_moments needs"):
    captioner.Captioner(vocab_size=5, init_moments=True, position_channels="one_hot")


def test_encoder_blocks_update_features_but_keep_positions_exact():
  plain = small_captioner()
  blocks = small_captioner(encoder_blocks=1)
  images = inputs()["image"]
  features, plain_features = blocks.encode(images).numpy(), plain.encode(images).numpy()
  assert features.shape == plain_features.shape  # [B, L, C + 2]
  # The (row, column) channels are the same exact coordinates with or without blocks.
  np.testing.assert_array_equal(features[..., -2:], plain_features[..., -2:])
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(blocks(inputs(), training=True)["logits"] ** 2)
  grads = tape.gradient(loss, blocks.trainable_variables)
  block_vars = [v.path for v in blocks.trainable_variables if "block0" in v.path]
  assert len(block_vars) >= 10
  assert all(g is not None for v, g in zip(blocks.trainable_variables, grads))


def test_attention_gate_can_be_turned_off():
  model = small_captioner(attention_gate=False)
  out = model(inputs())
  np.testing.assert_array_equal(out["gate"].numpy(), 1.0)
  assert not [v for v in model.weights if "gate" in v.path]
  gated = small_captioner()
  assert [v for v in gated.weights if "gate" in v.path]
  assert np.all((gated(inputs())["gate"].numpy() > 0) & (gated(inputs())["gate"].numpy() < 1))


def test_relative_keypoints_extend_the_features_and_keep_positions_last():
  plain = small_captioner()
  model = small_captioner(relative_keypoints=5, init_moments=True)
  images = inputs()["image"]
  features = model.encode(images).numpy()
  assert features.shape == plain.encode(images).shape[:2] + (16 + 10 + 2,)
  # The (row, column) channels stay last and exact, as init_moments needs.
  np.testing.assert_allclose(features[..., -2:], plain.encode(images).numpy()[..., -2:])
  assert model(inputs())["logits"].shape == (3, 6, 20)
