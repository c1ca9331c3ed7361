"""Greedy search, beam search and sampling: in-graph and batched, honest about captions that
never end, and exact on hand-built models whose probabilities are known."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from captioning import decoding
import helpers

END, PAD, START = 2, 0, 1


class Ids:
  start_id, end_id, pad_id = START, END, PAD


def search(model, method="greedy", max_length=4, beam_size=1, **options):
  return decoding.Search(
    model, Ids(), method=method, max_length=max_length, beam_size=beam_size, **options
  )


def small_model(vocab, decoder=None, width=4):
  return helpers.tiny_captioner(
    vocab,
    encoder={"widths": (width,), "strides": (2,)},
    decoder={"embed_dim": 8, "hidden_dim": 8, "attention_dim": 4, **(decoder or {})},
  )


def model_that_says(words_then_end, vocab=12):
  """A captioner whose output bias forces a fixed word sequence regardless of the image."""
  model = small_model(vocab)
  # Zero every logit weight and make the bias depend on the previous word via the embedding:
  # simplest is a bias favouring one word, so greedy repeats it.
  model.decoder.logits.kernel.assign(tf.zeros_like(model.decoder.logits.kernel))
  bias = np.full([vocab], -10.0, np.float32)
  bias[words_then_end] = 10.0
  model.decoder.logits.bias.assign(bias)
  return model


def test_batched_decode_shapes_and_attention():
  model = model_that_says(5)
  images = np.random.RandomState(0).randint(0, 255, (3, 32, 32, 3)).astype("uint8")
  out = search(model, max_length=6)(images)
  assert out["tokens"].shape == (3, 7)
  assert out["attention"].shape == (3, 7, 256)
  # One distribution per emitted word; none at the last step, where the caption was cut.
  np.testing.assert_allclose(out["attention"].numpy().sum(-1), [[1] * 6 + [0]] * 3, atol=1e-5)


@pytest.mark.parametrize("method,beam_size", [("greedy", 1), ("beam", 3)])
def test_caption_that_never_ends_is_reported_unfinished(method, beam_size):
  model = model_that_says(5)  # always word 5, never <end>
  out = search(model, method, beam_size=beam_size)(np.zeros([2, 32, 32, 3], np.uint8))
  np.testing.assert_array_equal(out["tokens"].numpy(), [[5, 5, 5, 5, PAD]] * 2)
  assert not out["finished"].numpy().any()


@pytest.mark.parametrize("method,beam_size", [("greedy", 1), ("beam", 3)])
def test_caption_that_ends_stops_and_pads(method, beam_size):
  model = model_that_says(END)
  out = search(model, method, beam_size=beam_size)(np.zeros([2, 32, 32, 3], np.uint8))
  np.testing.assert_array_equal(out["tokens"].numpy(), [[END, PAD, PAD, PAD, PAD]] * 2)
  assert out["finished"].numpy().all()
  assert np.all(out["attention"].numpy()[:, 1:] == 0)  # nothing attended after <end>


def test_greedy_matches_step_by_step_argmax():
  tf.keras.utils.set_random_seed(1)
  model = small_model(15, decoder={"hidden_dim": 16, "attention_dim": 8}, width=8)
  images = np.random.RandomState(1).randint(0, 255, (4, 32, 32, 3)).astype("uint8")
  out = search(model, max_length=5)(images)
  # Re-score the decoded prefix with teacher forcing: each emitted word is the argmax of the
  # words (never <pad> or <start>), up to the step after the 5th word, which may only end.
  tokens = out["tokens"].numpy()
  inputs = np.concatenate([np.full([4, 1], START), tokens[:, :-1]], 1).astype("int32")
  logits = model({"image": images, "tokens": inputs})["logits"].numpy()
  logits[..., [PAD, START]] = -np.inf
  for b in range(4):
    for t in range(5):
      if t > 0 and tokens[b, t - 1] in (END, PAD):
        break
      assert tokens[b, t] == logits[b, t].argmax()


def random_model(seed=3):
  """A random captioner (with coverage state) whose captions end at varied lengths."""
  tf.keras.utils.set_random_seed(seed)
  model = small_model(
    15, decoder={"hidden_dim": 16, "attention_dim": 8, "attention_coverage": True}, width=8
  )
  model.decoder.logits.kernel.assign(model.decoder.logits.kernel * 8.0)  # sharper choices
  bias = np.zeros(15, np.float32)
  bias[END] = 1.0
  model.decoder.logits.bias.assign(bias)
  return model


def teacher_forced_log_prob(model, images, tokens):
  """The model's log-probability of each caption `tokens` [B, T] (through <end>)."""
  inputs = np.concatenate([np.full([len(tokens), 1], START), tokens[:, :-1]], 1).astype("int32")
  log_probs = tf.nn.log_softmax(model({"image": images, "tokens": inputs})["logits"]).numpy()
  total = np.zeros(len(tokens))
  for b, caption in enumerate(tokens):
    for t, word in enumerate(caption):
      if word == PAD:
        break
      total[b] += log_probs[b, t, word]
  return total


def test_beam_scores_are_the_captions_log_probabilities():
  model = random_model()
  images = np.random.RandomState(0).randint(0, 255, (6, 32, 32, 3)).astype("uint8")
  greedy = search(model, max_length=8)(images)
  assert greedy["finished"].numpy().all()
  np.testing.assert_allclose(
    greedy["log_prob"].numpy(),
    teacher_forced_log_prob(model, images, greedy["tokens"].numpy()),
    atol=1e-3,
  )
  for beam_size in (1, 3):
    beam = search(model, "beam", max_length=8, beam_size=beam_size)(images)
    tokens = beam["tokens"].numpy()
    # The reported score is the model's own probability of the returned caption, so the
    # beams' LSTM and coverage states were reordered along with their words.
    np.testing.assert_allclose(
      beam["log_prob"].numpy(), teacher_forced_log_prob(model, images, tokens), atol=1e-3
    )
    # Greedy's caption is among the hypotheses a beam considers.
    assert np.all(beam["log_prob"].numpy() >= greedy["log_prob"].numpy() - 1e-4)
    assert beam["finished"].numpy().all()
    # One attention distribution per emitted token, zeros after <end>.
    emitted = (np.cumsum(tokens == END, axis=1) - (tokens == END)) == 0
    np.testing.assert_allclose(beam["attention"].numpy().sum(-1), emitted.astype(float), atol=1e-5)


def test_beam_search_escapes_the_greedy_garden_path():
  # Words 4 ("a") and 5 ("b"). Greedy takes "a" (0.6), after which every word is unlikely;
  # "b" (0.4) is followed by <end> with probability 0.95.
  probs = np.full([8, 8], 1e-6)
  probs[START, [4, 5]] = [0.6, 0.4]
  probs[4, [4, 5, 6, 7, END]] = 0.2
  probs[5, END], probs[5, 6] = 0.95, 0.05
  probs[6:, END] = 1.0
  model = helpers.MarkovCaptioner(np.log(probs / probs.sum(1, keepdims=True)))
  images = np.zeros([2, 8, 8, 3], np.uint8)
  greedy = search(model, max_length=3)(images)
  beam = search(model, "beam", max_length=3, beam_size=2)(images)
  assert greedy["tokens"].numpy()[0, 0] == 4
  np.testing.assert_array_equal(beam["tokens"].numpy(), [[5, END, PAD, PAD]] * 2)
  np.testing.assert_allclose(beam["log_prob"].numpy(), np.log(0.4 * 0.95), rtol=1e-4)
  assert beam["log_prob"].numpy()[0] > greedy["log_prob"].numpy()[0] + 0.5


def test_search_is_built_from_the_decode_section_and_bad_values_are_named():
  model = model_that_says(5)
  config = ml_collections.ConfigDict({"method": "beam", "max_length": 4, "beam_size": 3})
  built = decoding.build_search(config, model, Ids())
  assert (built.method, built.max_length, built.beam_size) == ("beam", 4, 3)
  config.method = "nucleus"
  with pytest.raises(ValueError, match=r"config\.decode: method must be one of"):
    decoding.build_search(config, model, Ids())
  config.method = "greedy"
  config.beam_size = 0
  with pytest.raises(ValueError, match="beam_size must be >= 1"):
    decoding.build_search(config, model, Ids())
  with pytest.raises(ValueError, match="vocabulary"):
    search(model, "beam", beam_size=7)  # 12 words
  with pytest.raises(ValueError, match=r"config\.decode\.lenght_penalty is not an argument"):
    decoding.build_search(
      {"method": "beam", "max_length": 4, "lenght_penalty": "gnmt"}, model, Ids()
    )
  for options, message in [
    (
      {"method": "beam", "beam_size": 2, "n_best": 3},
      "n_best 3 needs method 'beam' with beam_size",
    ),
    ({"method": "greedy", "n_best": 2}, "n_best 2 needs method 'beam'"),
    ({"method": "beam", "length_penalty": "wu"}, "length_penalty must be one of"),
    ({"method": "beam", "length_penalty_alpha": -1.0}, "length_penalty_alpha must be >= 0"),
    ({"method": "sample", "temperature": -0.5}, "temperature must be >= 0"),
    ({"method": "sample", "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"method": "sample", "top_k": 13}, "top_k 13 is more than the vocabulary's 12 words"),
    ({"method": "sample", "no_repeat_ngram_size": 1}, "no_repeat_ngram_size must be 0"),
  ]:
    with pytest.raises(ValueError, match=r"Bad config: config\.decode: " + message):
      decoding.build_search({"max_length": 4, **options}, model, Ids())


class PrefixRecomputingDecoder:
  """The Transformer decoder without its key/value cache: every step re-runs teacher forcing
  over the whole prefix so far (what a search without a cache costs)."""

  def __init__(self, decoder):
    self.decoder, self.vocab_size, self.max_steps = decoder, decoder.vocab_size, decoder.max_steps

  def prepare(self, features):
    return {"features": features}

  def initial_state(self, memory):
    batch = tf.shape(memory["features"])[0]
    return {
      "history": tf.zeros([batch, self.max_steps], tf.int32),
      "index": tf.zeros([batch], tf.int32),
    }

  def step(self, tokens, state, memory):
    write = tf.one_hot(state["index"], self.max_steps, dtype=tf.int32)
    history = state["history"] * (1 - write) + tokens[:, tf.newaxis] * write
    out = self.decoder(memory["features"], history)  # later positions are masked: causal
    logits = tf.gather(out["logits"], state["index"], batch_dims=1)
    attention = tf.gather(out["attention"], state["index"], batch_dims=1)
    return logits, {"history": history, "index": state["index"] + 1}, {"attention": attention}


class WithDecoder:
  def __init__(self, model, decoder):
    self.model, self.decoder = model, decoder

  def encode(self, images, training=False):
    return self.model.encode(images, training=training)


@pytest.mark.parametrize("method,beam_size", [("greedy", 1), ("beam", 3)])
def test_transformer_search_with_the_cache_equals_search_without_it(method, beam_size):
  tf.keras.utils.set_random_seed(5)
  model = helpers.tiny_captioner(
    15,
    decoder={"name": "transformer", "num_layers": 2, "width": 16, "num_heads": 2,
             "max_length": 9, "dropout": 0.0},
  )  # fmt: skip
  model.decoder._project = lambda x, project=model.decoder._project: project(x) * 6.0
  images = np.random.RandomState(2).randint(0, 255, (4, 32, 32, 3)).astype("uint8")
  cached = search(model, method, max_length=8, beam_size=beam_size)(images)
  slow = search(WithDecoder(model, PrefixRecomputingDecoder(model.decoder)), method,
                max_length=8, beam_size=beam_size)(images)  # fmt: skip
  np.testing.assert_array_equal(cached["tokens"].numpy(), slow["tokens"].numpy())
  np.testing.assert_allclose(cached["log_prob"].numpy(), slow["log_prob"].numpy(), atol=1e-4)
  np.testing.assert_allclose(cached["attention"].numpy(), slow["attention"].numpy(), atol=1e-5)
  # And the scores are the model's own teacher-forced log-probabilities of the captions.
  np.testing.assert_allclose(
    cached["log_prob"].numpy(),
    teacher_forced_log_prob(model, images, cached["tokens"].numpy()),
    atol=1e-3,
  )
  with pytest.raises(ValueError, match="needs a decoder of at least 10 positions"):
    search(model, method, max_length=9, beam_size=beam_size)


@pytest.mark.parametrize(
  "method,beam_size,expected",
  [
    ("greedy", 1, [5, 5, 5, 5, PAD]),  # word 5 is the likeliest word; <end> never is
    ("beam", 3, [END, PAD, PAD, PAD, PAD]),  # ending at once beats four unlikely words
  ],
)
def test_pad_and_start_are_never_emitted_even_when_likeliest(method, beam_size, expected):
  model = model_that_says(5)
  bias = model.decoder.logits.bias.numpy()
  bias[[PAD, START]] = 30.0  # far likelier than word 5 or <end>
  bias[END] = 9.0
  model.decoder.logits.bias.assign(bias)
  out = search(model, method, beam_size=beam_size)(np.zeros([2, 32, 32, 3], np.uint8))
  np.testing.assert_array_equal(out["tokens"].numpy(), [expected] * 2)
  assert out["finished"].numpy().all() == (expected[0] == END)


@pytest.mark.parametrize("method,beam_size", [("greedy", 1), ("beam", 3)])
def test_a_batch_of_one_image_decodes(method, beam_size):
  # A static batch of one broadcast against the loop's unknown batch once failed to trace.
  model = random_model()
  images = np.random.RandomState(4).randint(0, 255, (3, 32, 32, 3)).astype("uint8")
  together = search(model, method, max_length=6, beam_size=beam_size)(images)
  alone = search(model, method, max_length=6, beam_size=beam_size)(images[1:2])
  np.testing.assert_array_equal(alone["tokens"].numpy()[0], together["tokens"].numpy()[1])
