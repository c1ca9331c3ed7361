"""The teacher-forced relation probe, scored with fake models whose answers are known."""

import numpy as np
import pytest
import tensorflow as tf

from captioning.data import datasets
from captioning.data import images as images_lib
from captioning.data import tokenizer as tokenizer_lib
from captioning.data.shapes import dataset
from captioning.data.shapes import generation
from captioning.data.shapes import relations
from captioning.data.shapes import scenes


@pytest.fixture(scope="module")
def setup():
  generated = generation.generate_split("val", 40, seed=2, image_size=32)
  images = generated.images.copy()
  images[:, 0, 0, 0] = np.arange(len(images))  # lets the fake models find the scene
  split = dataset.ShapesSplit(
    "val",
    images_lib.ArrayImages(images),
    generated.image_ids,
    generated.captions,
    list(generated.scenes),
  )
  tok = tokenizer_lib.Tokenizer.build([c for cs in generated.captions for c in cs], vocab_size=100)
  return split, tok


class FakeModel:
  """Gives a caption's first word probability ~1 when `says(scene, words)`, else 1/V."""

  def __init__(self, split, tok, says):
    self.split, self.tok, self.says = split, tok, says

  def _first_logit(self, images, tokens):
    out = np.zeros([len(tokens)], np.float32)
    for i, (image, ids) in enumerate(zip(images.numpy(), tokens.numpy())):
      words = self.tok.decode(ids).split()
      out[i] = 30.0 if self.says(self.split.scenes[int(image[0, 0, 0])], words) else 0.0
    return out

  def __call__(self, inputs, training=False):
    tokens = inputs["tokens"]  # <start> w1 ... wn <pad>...: the inputs hold every word
    first = tf.py_function(self._first_logit, [inputs["image"], tokens], tf.float32)
    # Every word after the first is predicted with certainty (from the inputs), so captions
    # differ only in how likely their first word is.
    following = (
      tf.one_hot(tf.concat([tokens[:, 2:], tokens[:, -1:] * 0], 1), self.tok.vocab_size) * 30.0
    )
    first_word = (
      tf.one_hot(tf.fill(tf.shape(tokens)[:1], self.tok.vocabulary.index("a")), self.tok.vocab_size)
      * first[:, None]
    )  # [B, V]
    return {"logits": tf.concat([first_word[:, None], following], 1)}  # [B, T, V]


def _relation(words):
  """Returns (subject, relation, reference) of "a A <phrase> a B"."""
  text = " ".join(words)
  for relation, phrases in scenes.RELATION_PHRASES:
    for phrase in sorted(phrases, key=len, reverse=True):
      a, sep, b = text.partition(f" {phrase} a ")
      if sep:
        return a[2:], relation, b
  raise AssertionError(text)


def _oracle(scene, words):
  a, relation, b = _relation(words)
  named = {scenes.mention_text(o): o for o in scene}
  return scenes.relation_holds(named[a], named[b], relation)


def test_an_oracle_scores_one_and_a_left_sayer_scores_chance(setup):
  split, tok = setup
  evaluator = relations.RelationEvaluator(split, tok, max_caption_length=12, batch_size=64)
  assert len(evaluator.truth) > 20
  oracle = evaluator.run(FakeModel(split, tok, _oracle))
  assert oracle == {
    "relation_accuracy": 1.0,
    "relation_accuracy_horizontal": 1.0,
    "relation_accuracy_vertical": 1.0,
  }
  left = evaluator.run(FakeModel(split, tok, lambda scene, w: _relation(w)[1] == "left"))
  # Every pair is scored in both orders, so "left" is right exactly half the time.
  assert left["relation_accuracy_horizontal"] == 0.5
  wrong = evaluator.run(FakeModel(split, tok, lambda scene, w: not _oracle(scene, w)))
  assert wrong["relation_accuracy_horizontal"] == 0.0
  assert wrong["relation_accuracy_vertical"] == 0.0


def test_scenes_are_required_and_single_objects_give_no_metrics(setup):
  split, tok = setup
  with pytest.raises(ValueError, match="scene ground truth"):
    relations.RelationEvaluator(
      datasets.CaptionSplit("val", split.images, split.image_ids, split.captions), tok, 12, 8
    )
  single = [i for i, s in enumerate(split.scenes) if len(s) == 1]
  ones = dataset.ShapesSplit(
    "val",
    split.images[single],
    split.image_ids[single],
    [split.captions[i] for i in single],
    [split.scenes[i] for i in single],
  )
  assert relations.RelationEvaluator(ones, tok, 12, 8).run(None) == {}
