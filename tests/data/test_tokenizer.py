"""Tokenizer: standardisation, round trips, special tokens, and saving with the workdir."""

import numpy as np
import pytest

from captioning.data import tokenizer as tokenizer_lib

CAPTIONS = [
  "A small red circle to the left of a blue square.",
  "there is a large green triangle , and a red circle",
  "a small red circle",
]


def make():
  return tokenizer_lib.Tokenizer.build(CAPTIONS, vocab_size=100)


def test_punctuation_is_never_glued_to_words():
  assert tokenizer_lib.split_words("A red circle, left of a SQUARE.") == [
    "a",
    "red",
    "circle",
    ",",
    "left",
    "of",
    "a",
    "square",
    ".",
  ]
  assert tokenizer_lib.split_words("  spaced\tout \n words ") == ["spaced", "out", "words"]
  assert tokenizer_lib.split_words("") == []
  with pytest.raises(TypeError, match="must be a string"):
    tokenizer_lib.split_words(None)


def test_round_trip_and_special_tokens():
  tok = make()
  assert tok.vocabulary[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
  ids = tok.encode("A small red circle to the left of a blue square.", max_length=20)
  assert ids.shape == (22,) and ids.dtype == np.int32
  assert ids[0] == tok.start_id
  words = tokenizer_lib.split_words(CAPTIONS[0])
  assert ids[len(words) + 1] == tok.end_id  # <end> is its own token, after the "."
  assert np.all(ids[len(words) + 2 :] == tok.pad_id)
  assert tok.decode(ids) == "a small red circle to the left of a blue square ."
  assert tok.decode([tok.start_id] + list(tok.encode("a red circle", 5)[1:])) == "a red circle"


def test_unknown_words_truncation_and_empty_captions():
  tok = make()
  assert tok.decode(tok.encode("a purple hexagon", 10)) == "a <unk> <unk>"
  ids = tok.encode("a small red circle to the left of a blue square", max_length=4)
  assert tok.decode(ids) == "a small red circle" and ids[-1] == tok.end_id
  empty = tok.encode("", max_length=3)
  np.testing.assert_array_equal(empty, [tok.start_id, tok.end_id, 0, 0, 0])
  huge = tok.encode("a " * 100000, max_length=8)
  assert huge.shape == (10,)


def test_min_count_and_vocab_size_bound():
  tok = tokenizer_lib.Tokenizer.build(CAPTIONS, vocab_size=100, min_count=2)
  assert "red" in tok.vocabulary and "triangle" not in tok.vocabulary
  small = tokenizer_lib.Tokenizer.build(CAPTIONS, vocab_size=7)
  assert small.vocab_size == 7
  assert small.vocabulary[4:] == ["a", "circle", "red"]  # most frequent first, ties a-z
  with pytest.raises(ValueError, match="vocab_size"):
    tokenizer_lib.Tokenizer.build(CAPTIONS, vocab_size=3)
  with pytest.raises(ValueError, match="no words"):
    tokenizer_lib.Tokenizer.build(["", " "], vocab_size=10)


def test_vocabulary_does_not_depend_on_caption_order():
  assert (
    make().vocabulary == tokenizer_lib.Tokenizer.build(CAPTIONS[::-1], vocab_size=100).vocabulary
  )


def test_save_and_load(tmp_path):
  tok = make()
  path = str(tmp_path / "tokenizer.json")
  tok.save(path)
  loaded = tokenizer_lib.Tokenizer.load(path)
  assert loaded.vocabulary == tok.vocabulary
  np.testing.assert_array_equal(loaded.encode(CAPTIONS[1], 12), tok.encode(CAPTIONS[1], 12))
  with pytest.raises(FileNotFoundError, match="training workdir"):
    tokenizer_lib.Tokenizer.load(str(tmp_path / "missing.json"))


def test_output_prior_is_a_log_distribution_over_targets():
  tok = make()
  prior = tok.word_counts_prior(CAPTIONS)
  probs = np.exp(prior)
  assert probs.sum() == pytest.approx(1.0, abs=1e-5)
  assert probs[tok.pad_id] == 0 and probs[tok.start_id] == 0
  assert probs[tok.vocabulary.index("a")] > probs[tok.vocabulary.index("triangle")]
