"""Losses and teacher-forced metrics on captions, written with raw TF ops on real tensors."""

import tensorflow as tf


def masked_cross_entropy(targets, logits, mask, label_smoothing=0.0):
  """Mean token cross-entropy over the unmasked targets.

  Args:
    targets: int [B, T] next-word ids.
    logits: float [B, T, V].
    mask: bool [B, T], False at padding.
    label_smoothing: spreads this much target mass uniformly over the vocabulary.

  Returns:
    (mean loss, number of unmasked tokens) as float32 scalars.
  """
  logits = tf.cast(logits, tf.float32)
  vocab = tf.shape(logits)[-1]
  if label_smoothing:
    labels = tf.one_hot(targets, vocab)
    labels = labels * (1.0 - label_smoothing) + label_smoothing / tf.cast(vocab, tf.float32)
    per_token = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
  else:
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)  # [B, T]
  weights = tf.cast(mask, tf.float32)
  count = tf.reduce_sum(weights)
  return tf.reduce_sum(per_token * weights) / tf.maximum(count, 1.0), count


def doubly_stochastic_penalty(attention, mask):
  """The attention regulariser of Xu et al. 2015, eq. 14, averaged over locations and images.

  It pushes every location to receive a total attention of about 1 over the caption, so the
  model looks at every part of the image instead of staring at one spot.

  Args:
    attention: [B, T, L] weights of each decoding step.
    mask: bool [B, T], False at padding steps (they do not count).

  Returns:
    A float32 scalar: mean over B and L of (1 - sum_t alpha_{t,l})^2.
  """
  attention = tf.cast(attention, tf.float32) * tf.cast(mask, tf.float32)[:, :, tf.newaxis]
  per_location = tf.reduce_sum(attention, axis=1)  # [B, L]
  return tf.reduce_mean(tf.square(1.0 - per_location))


def token_accuracy(targets, logits, mask):
  """Share of unmasked targets that the teacher-forced argmax predicts (not a caption metric)."""
  hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=targets.dtype), targets), tf.float32)
  weights = tf.cast(mask, tf.float32)
  return tf.reduce_sum(hits * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


class CaptionLoss:
  """The training loss `config.loss` describes; the section reaches it whole.

  loss = masked cross-entropy (with label smoothing) + doubly_stochastic_weight * the doubly
  stochastic attention penalty.

  Args:
    label_smoothing: target mass spread uniformly over the vocabulary, in [0, 1).
    doubly_stochastic_weight: lambda of Xu et al.'s attention regulariser, >= 0.
  """

  def __init__(self, label_smoothing=0.0, doubly_stochastic_weight=0.0):
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if doubly_stochastic_weight < 0.0:
      raise ValueError(f"doubly_stochastic_weight must be >= 0, got {doubly_stochastic_weight}")
    self.label_smoothing = label_smoothing
    self.doubly_stochastic_weight = doubly_stochastic_weight

  def __call__(self, targets, outputs, mask):
    """Scores the model's `outputs` (logits [B, T, V], attention [B, T, L]) on `targets` [B, T].

    Returns:
      (the loss to minimise, a dict of its named parts as float32 scalars).
    """
    ce, _ = masked_cross_entropy(targets, outputs["logits"], mask, self.label_smoothing)
    penalty = doubly_stochastic_penalty(outputs["attention"], mask)
    loss = ce + self.doubly_stochastic_weight * penalty
    return loss, {"loss": loss, "cross_entropy": ce, "attention_penalty": penalty}
