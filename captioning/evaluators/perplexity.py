"""Teacher-forced loss and perplexity on a held-out split.

These numbers score the reference captions under the model with the true previous words fed in;
they are not caption-quality metrics (see `captions.CaptionEvaluator` for decoded captions).
"""

import math

import tensorflow as tf

from captioning import losses
from captioning.data import pipeline
from captioning.evaluators import base


class PerplexityEvaluator(base.Evaluator):
  """Mean token cross-entropy, perplexity and teacher-forced token accuracy.

  Args:
    split: a CaptionSplit.
    tokenizer: the workdir's tokenizer.
    max_caption_length: caption length in words, as in training.
    batch_size: pairs per batch.
  """

  def __init__(self, split, tokenizer, max_caption_length, batch_size):
    self.split = split
    self.tokens = pipeline.encode_captions(split, tokenizer, max_caption_length)
    self.batch_size = batch_size
    self.pad_id = tokenizer.pad_id
    self._score, self._score_model = None, None  # compiled once per model

  def _make_score(self, model):
    @tf.function
    def score(batch):
      inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
      mask = tf.not_equal(targets, self.pad_id)
      out = model({**batch, "tokens": inputs}, training=False)
      loss, count = losses.masked_cross_entropy(targets, out["logits"], mask)
      accuracy = losses.token_accuracy(targets, out["logits"], mask)
      return loss * count, accuracy * count, count

    return score

  def run(self, model):
    """Returns {"teacher_forced_loss", "perplexity", "teacher_forced_token_accuracy"}."""
    if self._score_model is not model:
      self._score, self._score_model = self._make_score(model), model
    total_loss = total_hits = total_count = 0.0
    for batch in pipeline.caption_batches(self.split, self.tokens, self.batch_size):
      loss, hits, count = (float(x) for x in self._score(batch))
      total_loss, total_hits, total_count = (
        total_loss + loss,
        total_hits + hits,
        total_count + count,
      )
    mean = total_loss / max(total_count, 1.0)
    return {
      "teacher_forced_loss": mean,
      "perplexity": math.exp(min(mean, 50.0)),
      "teacher_forced_token_accuracy": total_hits / max(total_count, 1.0),
    }
