"""The decoder contract every search relies on, checked for every registered decoder, and the
Show-Attend-Tell decoder's own behaviour."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.models import decoders
import helpers

# Small settings of every registered decoder; a new decoder adds its line here.
SETTINGS = {
  "sat_lstm": {"embed_dim": 16, "hidden_dim": 24, "attention_dim": 12},
  "transformer": {"num_layers": 2, "width": 16, "num_heads": 2, "max_length": 8},
}
VARIANTS = [
  ("sat_lstm", {}),
  ("sat_lstm", {"attention_coverage": True, "attention_gate": False}),
  ("sat_lstm", {"init_moments": True, "dropout": 0.3}),
  ("transformer", {}),
  ("transformer", {"tie_embeddings": False, "num_layers": 1, "mlp_dim": 24, "dropout": 0.2}),
]


def test_every_registered_decoder_is_covered():
  assert sorted(SETTINGS) == decoders.DECODERS.names()


def make(name, overrides, vocab=20):
  decoder = decoders.build_decoder({"name": name, **SETTINGS[name], **overrides}, vocab)
  decoder.build((None, 10, 6), (None, None))
  return decoder


def features_and_tokens(batch=4, steps=5, seed=0):
  features = tf.random.stateless_normal([batch, 10, 6], seed=[seed, 0])
  tokens = tf.random.stateless_uniform([batch, steps], [seed, 1], 1, 20, tf.int32)
  return features, tokens


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_step_by_step_equals_teacher_forcing(name, overrides):
  decoder = make(name, overrides)
  features, tokens = features_and_tokens()
  full = decoder(features, tokens)
  memory = decoder.prepare(features)
  state = decoder.initial_state(memory)
  for t in range(tokens.shape[1]):
    logits, state, outputs = decoder.step(tokens[:, t], state, memory)
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits.numpy(), full["logits"].numpy()[:, t], atol=1e-4)
    np.testing.assert_allclose(
      outputs["attention"].numpy(), full["attention"].numpy()[:, t], atol=1e-5
    )


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_memory_and_state_are_batch_first_so_one_gather_reorders_them(name, overrides):
  decoder = make(name, overrides)
  features, tokens = features_and_tokens()
  memory = decoder.prepare(features)
  state = decoder.initial_state(memory)
  for tensor in tf.nest.flatten((memory, state)):
    assert tensor.shape[0] == 4
  state = decoder.step(tokens[:, 0], state, memory)[1]
  # Reordering the rows of memory and state (what beam search does) reorders the next step's
  # outputs the same way: no tensor mixes rows or hides a batch axis elsewhere.
  order = tf.constant([2, 0, 3, 1])
  gather = lambda x: tf.gather(x, order)
  logits, next_state, outputs = decoder.step(tokens[:, 1], state, memory)
  logits2, next_state2, outputs2 = decoder.step(
    gather(tokens[:, 1]),
    tf.nest.map_structure(gather, state),
    tf.nest.map_structure(gather, memory),
  )
  np.testing.assert_allclose(logits2.numpy(), gather(logits).numpy(), atol=1e-5)
  np.testing.assert_allclose(
    outputs2["attention"].numpy(), gather(outputs["attention"]).numpy(), atol=1e-6
  )
  for a, b in zip(tf.nest.flatten(next_state2), tf.nest.flatten(next_state)):
    np.testing.assert_allclose(a.numpy(), gather(b).numpy(), atol=1e-5)


@pytest.mark.parametrize("name,overrides", VARIANTS)
def test_round_trip(name, overrides):
  decoder = make(name, overrides)
  features, tokens = features_and_tokens()
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(decoder))
  assert restored.built  # from the serialised build config
  for a, b in zip(decoder.weights, restored.weights):
    b.assign(a)
  assert restored.get_config() == decoder.get_config()
  np.testing.assert_array_equal(
    restored(features, tokens)["logits"].numpy(), decoder(features, tokens)["logits"].numpy()
  )


def test_coverage_accumulates_attention():
  decoder = make("sat_lstm", {"attention_coverage": True})
  features, tokens = features_and_tokens()
  memory = decoder.prepare(features)
  state = decoder.initial_state(memory)
  total = np.zeros([4, 10], np.float32)
  for t in range(3):
    _, state, outputs = decoder.step(tokens[:, t], state, memory)
    total += outputs["attention"].numpy()
  np.testing.assert_allclose(state["coverage"].numpy(), total, atol=1e-5)
  with pytest.raises(ValueError, match="pass `coverage`"):
    decoder.attention(features, state["h"])


def test_init_dropout_drops_whole_examples_only_in_training():
  decoder = make("sat_lstm", {"init_dropout": 0.5})
  memory = decoder.prepare(tf.random.stateless_normal([64, 10, 6], seed=[1, 2]))
  h_eval = decoder.initial_state(memory)["h"].numpy()
  h_train = decoder.initial_state(memory, training=True)["h"].numpy()
  h_empty = np.tanh(decoder.init_h.bias.numpy())  # the state of a dropped example
  dropped = np.all(np.isclose(h_train, h_empty, atol=1e-6), axis=1)
  assert 10 < dropped.sum() < 54  # about half of 64
  np.testing.assert_allclose(h_train[~dropped], h_eval[~dropped], atol=1e-6)
  np.testing.assert_array_equal(decoder.initial_state(memory)["h"].numpy(), h_eval)


def test_initial_state_sees_the_layout_with_moments():
  features = tf.random.normal([1, 4, 6], seed=3)
  coords = tf.constant([[[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]])
  layout = tf.concat([features, coords], -1)  # 4 locations, (row, column) last
  swapped = tf.concat([tf.reverse(features, [1]), coords], -1)  # same contents, moved
  for moments, differ in ((True, True), (False, False)):
    decoder = decoders.build_decoder(
      {
        "name": "sat_lstm",
        "embed_dim": 4,
        "hidden_dim": 6,
        "attention_dim": 3,
        "init_moments": moments,
      },
      vocab_size=5,
    )
    decoder.build((None, 4, 8), (None, None))
    assert decoder.needs_linear_coordinates == moments
    h = [decoder.initial_state(decoder.prepare(x))["h"].numpy() for x in (layout, swapped)]
    assert (np.abs(h[0] - h[1]).max() > 1e-4) == differ  # same mean, different moments


def test_captioner_outputs_come_from_the_decoder():
  model = helpers.tiny_captioner(decoder={"attention_coverage": True})
  images = np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype("uint8")
  tokens = np.ones([2, 3], np.int32)
  np.testing.assert_array_equal(
    model({"image": images, "tokens": tokens})["logits"].numpy(),
    model.decoder(model.encode(images), tokens)["logits"].numpy(),
  )
