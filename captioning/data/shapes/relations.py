"""Teacher-forced relation accuracy on `shapes`: does the model know where things are?

Decoded captions mix several skills, and greedy decoding can hide what a model knows (a relation
phrase that starts with "to the" collects the probability of both "to the left of" and "to the
right of"). This evaluator asks the model directly. For every pair of objects (A, B) of a scene
it scores the captions "a A <phrase> a B" for every phrase of every relation, teacher-forced, and
sums their probabilities per relation: p(r) = sum over the phrases of r of p(caption). The model
"says" the relation with the highest p(r). Metrics (chance in brackets):

* `relation_accuracy`: the chosen relation among all four is true of (A, B) (about 0.375).
* `relation_accuracy_horizontal`: "left" vs "right", on pairs in different columns (0.5).
* `relation_accuracy_vertical`: "above" vs "below", on pairs in different rows (0.5).
"""

import numpy as np
import tensorflow as tf

from captioning.data.shapes import dataset
from captioning.data.shapes import scenes
from captioning.evaluators import base


class RelationEvaluator(base.Evaluator):
  """Scores relation phrases between every ordered pair of objects of a `shapes` split.

  Args:
    split: a `dataset.ShapesSplit` (its images keep their scenes).
    tokenizer: the workdir's tokenizer.
    max_caption_length: caption length in words, as in training.
    batch_size: captions per batch.
    max_pairs: score at most this many (A, B) pairs (the first ones of the split).
  """

  def __init__(self, split, tokenizer, max_caption_length, batch_size, max_pairs=500):
    if not isinstance(split, dataset.ShapesSplit):
      raise ValueError("The relations evaluator needs scene ground truth (the shapes dataset).")
    self.batch_size = batch_size
    self.pad_id = tokenizer.pad_id
    images, captions, self.truth = [], [], []  # truth: [num_pairs, 4] bool over RELATIONS
    phrases = dict(scenes.RELATION_PHRASES)
    for index, scene in enumerate(split.scenes):
      for a in scene:
        for b in scene:
          if a is b or len(self.truth) >= max_pairs:
            continue
          self.truth.append([scenes.relation_holds(a, b, r) for r in scenes.RELATIONS])
          for relation in scenes.RELATIONS:
            for phrase in phrases[relation]:
              captions.append(f"a {scenes.mention_text(a)} {phrase} a {scenes.mention_text(b)}")
              images.append(index)
    self.truth = np.array(self.truth, bool).reshape(-1, len(scenes.RELATIONS))
    self.phrases_per_relation = len(phrases[scenes.RELATIONS[0]])
    if any(len(p) != self.phrases_per_relation for p in phrases.values()):
      raise ValueError("Every relation needs the same number of phrases.")
    self.images = split.images
    self.image_index = np.array(images, np.int64)
    tokens = tokenizer.encode_batch(captions, max_caption_length)
    # Score the words only: "<end>" would come after B in some templates but not in others.
    self.tokens = np.where(tokens == tokenizer.end_id, self.pad_id, tokens).astype(np.int32)
    self._score, self._score_model = None, None

  def _make_score(self, model):

    @tf.function
    def score(images, tokens):
      inputs, targets = tokens[:, :-1], tokens[:, 1:]
      logits = model({self.images.key: images, "tokens": inputs}, training=False)["logits"]
      log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)  # [B, T]
      mask = tf.cast(tf.not_equal(targets, self.pad_id), log_probs.dtype)
      return tf.reduce_sum(log_probs * mask, axis=-1)  # log p(caption words) [B]

    return score

  def run(self, model):
    """Returns the three relation accuracies (empty if the split has no object pairs)."""
    if not len(self.truth):
      return {}
    if self._score_model is not model:
      self._score, self._score_model = self._make_score(model), model
    scores = []
    for start in range(0, len(self.tokens), self.batch_size):
      sel = slice(start, start + self.batch_size)
      images = self.images.numpy(self.image_index[sel])
      scores.append(self._score(images, self.tokens[sel]).numpy())
    scores = np.concatenate(scores).reshape(
      len(self.truth), len(scenes.RELATIONS), self.phrases_per_relation
    )
    # log p(relation) = log sum over its phrases of p(caption).
    top = scores.max(-1, keepdims=True)
    relation_scores = (top + np.log(np.exp(scores - top).sum(-1, keepdims=True)))[..., 0]
    chosen = relation_scores.argmax(-1)
    metrics = {"relation_accuracy": float(self.truth[np.arange(len(chosen)), chosen].mean())}
    for name, (first, second) in (("horizontal", (0, 1)), ("vertical", (2, 3))):
      differ = self.truth[:, first] | self.truth[:, second]
      if differ.any():
        says_first = relation_scores[differ, first] > relation_scores[differ, second]
        metrics[f"relation_accuracy_{name}"] = float(
          (says_first == self.truth[differ, first]).mean()
        )
    return metrics
