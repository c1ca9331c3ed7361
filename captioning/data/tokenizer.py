"""A word-level caption tokenizer built from training captions and saved with the workdir.

Captions are standardised the same way everywhere (training, decoding, fact checking):
lowercase, punctuation split off as its own token, whitespace collapsed. Special tokens never
glue to words: `<end>` is a separate id, never a suffix of the last word.
"""

import collections
import json
import os
import re
import unicodedata

import numpy as np

from captioning import files

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)  # ids 0..3, in this order
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_LOOSE_APOSTROPHE = re.compile(r"(?<![a-z0-9])'|'(?![a-z])")


def normalize_caption(caption):
  """A real-world caption as training sees it: plain lowercase words, single spaces.

  Unicode is folded to ASCII where it has an ASCII form ("Café" -> "cafe", full-width letters,
  typographic quotes), punctuation and symbols become spaces (apostrophes inside words stay:
  "dog's"), and whitespace of any kind (tabs, newlines, non-breaking spaces) collapses to one
  space. An empty result means the caption has no usable words. Length is not cut here: the
  tokenizer truncates to `config.data.max_caption_length` words.

  Args:
    caption: a caption string as a dataset's annotations give it.

  Returns:
    The normalised caption, e.g. " A  DOG’s ball… (red)!" -> "a dog's ball red".
  """
  if not isinstance(caption, str):
    raise TypeError(f"A caption must be a string, got {type(caption).__name__}: {caption!r}")
  text = unicodedata.normalize("NFKC", caption).replace("\u2019", "'").replace("\u2018", "'")
  text = "".join(
    c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
  ).lower()
  text = _NOT_WORD.sub(" ", text)
  text = _LOOSE_APOSTROPHE.sub(" ", text)
  return " ".join(text.split())


def split_words(caption):
  """Lowercases `caption` and splits it into words and punctuation marks.

  Args:
    caption: a caption string.

  Returns:
    A list of tokens, e.g. "A red circle, left." -> ["a", "red", "circle", ",", "left", "."].
  """
  if not isinstance(caption, str):
    raise TypeError(f"A caption must be a string, got {type(caption).__name__}: {caption!r}")
  return _WORD_RE.findall(caption.lower())


class Tokenizer:
  """Maps caption strings to padded id sequences and back.

  Id 0 is padding, 1 start, 2 end, 3 unknown; words follow by decreasing frequency.
  """

  def __init__(self, vocabulary):
    """Creates a tokenizer from a word list that starts with the special tokens."""
    vocabulary = list(vocabulary)
    if tuple(vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise ValueError(f"A vocabulary must start with {SPECIAL_TOKENS}, got {vocabulary[:4]}")
    if len(set(vocabulary)) != len(vocabulary):
      raise ValueError("The vocabulary has duplicate words.")
    self._words = vocabulary
    self._ids = {w: i for i, w in enumerate(vocabulary)}

  @classmethod
  def build(cls, captions, *, vocab_size, min_count=1):
    """Builds a vocabulary from training captions.

    Args:
      captions: an iterable of caption strings.
      vocab_size: upper bound on the vocabulary size, special tokens included.
      min_count: words seen fewer times than this map to `<unk>`.

    Returns:
      A Tokenizer.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
      raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = collections.Counter()
    for caption in captions:
      counts.update(split_words(caption))
    if not counts:
      raise ValueError("Cannot build a vocabulary from no words: are the captions empty?")
    # Ties are broken alphabetically so the vocabulary does not depend on caption order.
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    ranked = [w for w in ranked if w not in SPECIAL_TOKENS]
    return cls(list(SPECIAL_TOKENS) + ranked[: vocab_size - len(SPECIAL_TOKENS)])

  @property
  def vocab_size(self):
    return len(self._words)

  @property
  def vocabulary(self):
    return list(self._words)

  pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

  def encode(self, caption, max_length):
    """Encodes one caption as `[<start>, w1, ..., wn, <end>, <pad>...]` of length max_length + 2.

    Captions longer than `max_length` words are truncated (the `<end>` token is kept).

    Returns:
      An int32 numpy array of shape [max_length + 2].
    """
    words = split_words(caption)[:max_length]
    ids = [self.start_id] + [self._ids.get(w, self.unk_id) for w in words] + [self.end_id]
    out = np.zeros([max_length + 2], np.int32)
    out[: len(ids)] = ids
    return out

  def encode_batch(self, captions, max_length):
    """Encodes a list of captions into an int32 array [N, max_length + 2]."""
    if not captions:
      return np.zeros([0, max_length + 2], np.int32)
    return np.stack([self.encode(c, max_length) for c in captions])

  def decode(self, ids):
    """Turns ids into a caption string, stopping at the first `<end>` or `<pad>`.

    Args:
      ids: a sequence of ints, with or without a leading `<start>`.

    Returns:
      The words joined by single spaces (punctuation stays a separate token).
    """
    words = []
    for i in np.asarray(ids).tolist():
      if i in (self.end_id, self.pad_id):
        break
      if i == self.start_id:
        continue
      words.append(self._words[i] if 0 <= i < len(self._words) else UNK)
    return " ".join(words)

  def decode_batch(self, ids):
    return [self.decode(row) for row in np.asarray(ids)]

  def word_counts_prior(self, captions):
    """Unigram log-frequencies of the targets (words and `<end>`), for the output bias init."""
    counts = np.ones([self.vocab_size], np.float64)  # add-one so no word starts at -inf
    for caption in captions:
      for w in split_words(caption):
        counts[self._ids.get(w, self.unk_id)] += 1
      counts[self.end_id] += 1
    counts[self.pad_id] = counts[self.start_id] = 0.0  # never targets
    probs = counts / counts.sum()
    return np.where(probs > 0, np.log(np.maximum(probs, 1e-30)), -1e9).astype(np.float32)

  def save(self, path):
    """Writes the vocabulary as JSON (a workdir keeps it beside its checkpoints)."""
    files.write_json(path, {"vocabulary": self._words}, indent=0)

  @classmethod
  def load(cls, path):
    """Reads a tokenizer written by `save`."""
    if not os.path.exists(path):
      raise FileNotFoundError(f"No tokenizer at {path}: is this a training workdir?")
    with open(path) as f:
      return cls(json.load(f)["vocabulary"])
