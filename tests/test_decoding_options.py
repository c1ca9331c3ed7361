"""Decoding options: length penalties and n-best lists, sampling, the repetition guard.

A hand-built model of known probabilities pins what each search must return; random captioners
(LSTM with coverage, Transformer with its cache) pin that beam size 1 and sampling at
temperature 0 are exactly greedy search.
"""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from captioning import decoding
import helpers

PAD, START, END, A, B, C = range(6)
WORDS = {A: "a", B: "b", C: "c"}


class Ids:
  start_id, end_id, pad_id = START, END, PAD


def search(model, method, **options):
  return decoding.Search(model, Ids(), method=method, **options)


def markov(rows, vocab=6):
  """A MarkovCaptioner from {previous word: {next word: probability}}; unlisted moves get a
  negligible probability."""
  probs = np.full([vocab, vocab], 1e-12)
  for previous, moves in rows.items():
    for word, p in moves.items():
      probs[previous, word] = p
  return helpers.MarkovCaptioner(np.log(probs / probs.sum(1, keepdims=True)))


# p(caption) is the product along the chain, e.g. p("a b") = 0.5 * 0.3 * 0.7 = 0.105.
CHAIN = {
  START: {A: 0.5, B: 0.3, C: 0.2},
  A: {END: 0.4, A: 0.1, B: 0.3, C: 0.2},
  B: {END: 0.7, A: 0.1, B: 0.1, C: 0.1},
  C: {END: 0.9, A: 0.05, B: 0.03, C: 0.02},
}


def exhaustive_n_best(rows, max_length, penalty, n):
  """Every finished caption of up to max_length words, ranked by log_prob / penalty(tokens)."""
  ranked = []
  for length in range(1, max_length + 1):
    for words in itertools.product(WORDS, repeat=length):
      chain = (START, *words, END)
      log_prob = sum(math.log(rows[a].get(b, 1e-12)) for a, b in itertools.pairwise(chain))
      ranked.append((log_prob / penalty(length + 1), " ".join(WORDS[w] for w in words), log_prob))
  return sorted(ranked, reverse=True)[:n]


def n_best_of(out):
  captions = [
    [" ".join(WORDS[w] for w in row if w in WORDS) for row in image]
    for image in out["n_best_tokens"].numpy()
  ]
  return captions, out["n_best_score"].numpy(), out["n_best_log_prob"].numpy()


@pytest.mark.parametrize(
  "length_penalty,alpha,expected",
  [
    # p: "b" 0.21, "a" 0.2, "c" 0.18 (then "a b" 0.105).
    ("none", 0.0, [("b", 0.21), ("a", 0.2), ("c", 0.18)]),
    # Per token ("a b <end>" is 3 tokens): "a b" -0.751, "b" -0.780, "a c" -0.803, "a" -0.805.
    ("average", 0.0, [("a b", 0.105), ("b", 0.21), ("a c", 0.09)]),
    ("gnmt", 0.0, [("b", 0.21), ("a", 0.2), ("c", 0.18)]),  # alpha 0: no penalty
  ],
)
def test_beam_returns_the_known_n_best_list_and_scores(length_penalty, alpha, expected):
  out = search(
    markov(CHAIN),
    "beam",
    max_length=3,
    beam_size=3,
    n_best=3,
    length_penalty=length_penalty,
    length_penalty_alpha=alpha,
  )(np.zeros([2, 8, 8, 3], np.uint8))
  captions, scores, log_probs = n_best_of(out)
  assert captions == [[caption for caption, _ in expected]] * 2
  np.testing.assert_allclose(log_probs, [[math.log(p) for _, p in expected]] * 2, rtol=1e-5)
  lengths = np.array([len(caption.split()) + 1 for caption, _ in expected], np.float64)
  penalty = {"none": 1.0, "average": lengths, "gnmt": ((5 + lengths) / 6) ** alpha}
  np.testing.assert_allclose(scores, log_probs / penalty[length_penalty], rtol=1e-5)
  assert out["n_best_finished"].numpy().all()
  # The best of the list is the caption the search returns.
  np.testing.assert_array_equal(out["tokens"].numpy(), out["n_best_tokens"].numpy()[:, 0])
  assert out["score"].numpy()[0] == scores[0, 0]


@pytest.mark.parametrize("length_penalty,alpha", [("none", 0.0), ("gnmt", 2.0), ("average", 0.0)])
def test_a_wide_beam_finds_the_exhaustive_n_best(length_penalty, alpha):
  penalty = {
    "none": lambda n: 1.0,
    "gnmt": lambda n: ((5 + n) / 6) ** alpha,
    "average": lambda n: n,
  }[length_penalty]
  expected = exhaustive_n_best(CHAIN, 3, penalty, 3)
  out = search(
    markov(CHAIN, vocab=12),  # room for a beam of 6
    "beam",
    max_length=3,
    beam_size=6,
    n_best=3,
    length_penalty=length_penalty,
    length_penalty_alpha=alpha,
  )(np.zeros([1, 8, 8, 3], np.uint8))
  captions, scores, log_probs = n_best_of(out)
  assert captions[0] == [caption for _, caption, _ in expected]
  np.testing.assert_allclose(scores[0], [score for score, _, _ in expected], rtol=1e-5)
  np.testing.assert_allclose(log_probs[0], [lp for _, _, lp in expected], rtol=1e-5)


@pytest.mark.parametrize(
  "length_penalty,finished_second", [("none", "a"), ("average", "a a a"), ("gnmt", "a a a")]
)
def test_a_caption_cut_at_max_length_is_listed_as_unfinished(length_penalty, finished_second):
  # "a" goes on with probability 0.9, so the caption cut after 4 words (p = 0.729) outranks
  # every finished one ("a" 0.1, "a a" 0.09, "a a a" 0.081); the rest of the list is finished
  # captions in the penalty's order.
  chain = {START: {A: 1.0}, A: {A: 0.9, END: 0.1}}
  out = search(
    markov(chain),
    "beam",
    max_length=4,
    beam_size=2,
    n_best=2,
    length_penalty=length_penalty,
    length_penalty_alpha=3.0,
  )(np.zeros([1, 8, 8, 3], np.uint8))
  captions, _, log_probs = n_best_of(out)
  assert captions == [["a a a a", finished_second]]
  np.testing.assert_array_equal(out["n_best_finished"].numpy(), [[False, True]])
  assert not out["finished"].numpy()[0]
  np.testing.assert_allclose(log_probs[0, 0], math.log(0.729), rtol=1e-5)


def random_captioner(decoder, seed):
  tf.keras.utils.set_random_seed(seed)
  model = helpers.tiny_captioner(15, encoder={"widths": (8,), "strides": (2,)}, decoder=decoder)
  if decoder["name"] == "sat_lstm":
    model.decoder.logits.kernel.assign(model.decoder.logits.kernel * 8.0)  # sharper choices
    model.decoder.logits.bias.assign(np.eye(15, dtype=np.float32)[END] * 0.9)  # some captions end
  else:
    model.decoder._project = lambda x, project=model.decoder._project: project(x) * 6.0
  return model


RANDOM_DECODERS = {
  "sat_lstm": {"name": "sat_lstm", "embed_dim": 8, "hidden_dim": 16, "attention_dim": 8,
               "attention_coverage": True},
  "transformer": {"name": "transformer", "num_layers": 2, "width": 16, "num_heads": 2,
                  "max_length": 9, "dropout": 0.0},
}  # fmt: skip


@pytest.mark.parametrize("decoder", sorted(RANDOM_DECODERS))
def test_beam_of_one_and_sampling_at_temperature_zero_are_greedy_search(decoder):
  model = random_captioner(RANDOM_DECODERS[decoder], seed=3)
  images = np.random.RandomState(0).randint(0, 255, (12, 32, 32, 3)).astype("uint8")
  greedy = search(model, "greedy", max_length=8)(images)
  if decoder == "sat_lstm":  # captions that end and captions cut at max_length
    assert 0 < greedy["finished"].numpy().mean() < 1
  others = [
    search(model, "beam", max_length=8, beam_size=1)(images),
    search(model, "sample", max_length=8, temperature=0.0)(images),
    search(model, "sample", max_length=8, temperature=1e-6)(images, seed=7),
  ]
  for out in others:
    np.testing.assert_array_equal(out["tokens"].numpy(), greedy["tokens"].numpy())
    np.testing.assert_array_equal(out["finished"].numpy(), greedy["finished"].numpy())
    np.testing.assert_allclose(out["log_prob"].numpy(), greedy["log_prob"].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["attention"].numpy(), greedy["attention"].numpy(), atol=1e-6)


FIRST_WORDS = {START: {A: 0.5, B: 0.25, C: 0.15, END: 0.1}, A: {END: 1.0}, B: {END: 1.0},
               C: {END: 1.0}}  # fmt: skip


@pytest.mark.parametrize(
  "options,expected",
  [
    ({}, {A: 0.5, B: 0.25, C: 0.15, END: 0.1}),
    ({"temperature": 2.0}, {A: 0.3701, B: 0.2617, C: 0.2027, END: 0.1655}),  # p^(1/2), renormed
    ({"top_k": 2}, {A: 2 / 3, B: 1 / 3}),
    ({"top_p": 0.7}, {A: 2 / 3, B: 1 / 3}),  # "a" (0.5) alone falls short of 0.7
    ({"top_p": 0.8}, {A: 0.5 / 0.9, B: 0.25 / 0.9, C: 0.15 / 0.9}),
    ({"top_k": 3, "top_p": 0.6}, {A: 2 / 3, B: 1 / 3}),
  ],
)
def test_sampling_draws_from_the_filtered_distribution(options, expected):
  n = 20000
  out = search(markov(FIRST_WORDS), "sample", max_length=2, **options)(
    np.zeros([n, 8, 8, 3], np.uint8)
  )
  first = out["tokens"].numpy()[:, 0]
  assert set(np.unique(first)) <= set(expected)  # excluded words are never drawn
  for word, p in expected.items():
    assert abs(np.mean(first == word) - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3, word
  # Scores are the model's own log-probabilities, whatever the filter.
  log_p = {A: 0.5, B: 0.25, C: 0.15, END: 0.1}
  np.testing.assert_allclose(
    out["log_prob"].numpy(), [math.log(log_p[w]) for w in first], rtol=1e-4
  )


def test_sampling_is_keyed_on_the_seed():
  model = random_captioner(RANDOM_DECODERS["sat_lstm"], seed=1)
  images = np.random.RandomState(1).randint(0, 255, (16, 32, 32, 3)).astype("uint8")
  sampler = search(model, "sample", max_length=8, seed=5)
  first, again = sampler(images), sampler(images)
  np.testing.assert_array_equal(first["tokens"].numpy(), again["tokens"].numpy())
  other = sampler(images, seed=6)
  assert not np.array_equal(first["tokens"].numpy(), other["tokens"].numpy())
  np.testing.assert_array_equal(sampler(images, seed=5)["tokens"].numpy(), first["tokens"].numpy())
  assert sampler(images[:1])["tokens"].shape == (1, 9)  # a batch of one traces too


LOOPING = {START: {A: 0.9, END: 0.1}, A: {B: 0.9, END: 0.1}, B: {A: 0.8, C: 0.12, END: 0.08},
           C: {A: 0.6, END: 0.4}}  # fmt: skip


def trigrams(row):
  words = [w for w in row if w in WORDS]
  return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


@pytest.mark.parametrize("method,options", [("greedy", {}), ("beam", {"beam_size": 2}),
                                            ("sample", {"temperature": 0.5})])  # fmt: skip
def test_the_repetition_guard_never_repeats_a_trigram(method, options):
  model = markov(LOOPING)
  images = np.zeros([8, 8, 8, 3], np.uint8)
  loose = search(model, method, max_length=8, **options)(images)["tokens"].numpy()
  assert any(len(set(trigrams(row))) < len(trigrams(row)) for row in loose)  # "a b a b ..."
  guarded = search(model, method, max_length=8, no_repeat_ngram_size=3, **options)(images)
  for row in guarded["tokens"].numpy():
    assert len(set(trigrams(row))) == len(trigrams(row)), row
  if method == "greedy":  # "a b a b", then "a" would repeat "a b a": "c" is next best, ...
    np.testing.assert_array_equal(guarded["tokens"].numpy()[0], [A, B, A, B, C, A, B, END, PAD])


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_each_search_compiles_with_xla(method):
  model = markov(CHAIN)
  options = {"beam_size": 3, "n_best": 2, "length_penalty": "gnmt"} if method == "beam" else {}
  images = np.zeros([3, 8, 8, 3], np.uint8)
  plain = search(model, method, max_length=3, no_repeat_ngram_size=2, **options)(images)
  compiled = decoding.Search(
    model, Ids(), method=method, max_length=3, no_repeat_ngram_size=2, jit_compile=True, **options
  )(images)
  if method == "sample":  # XLA draws other random numbers: check what it drew is scored right
    log_probs = np.log(np.exp(model.decoder.log_transitions.numpy()))
    for row, log_prob in zip(compiled["tokens"].numpy(), compiled["log_prob"].numpy()):
      words = [START] + [w for w in row if w != PAD]
      expected = sum(log_probs[a, b] for a, b in itertools.pairwise(words))
      assert log_prob == pytest.approx(expected, rel=1e-5)
    return
  for key in ("tokens", "n_best_tokens", "finished"):
    np.testing.assert_array_equal(compiled[key].numpy(), plain[key].numpy())
  np.testing.assert_allclose(compiled["log_prob"].numpy(), plain["log_prob"].numpy(), rtol=1e-5)
