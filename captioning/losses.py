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
  total, count = masked_cross_entropy_sum(targets, logits, mask, label_smoothing)
  return total / tf.maximum(count, 1.0), count


def masked_cross_entropy_sum(targets, logits, mask, label_smoothing=0.0):
  """(summed token cross-entropy over the unmasked targets, their number); see
  `masked_cross_entropy`."""
  logits = tf.cast(logits, tf.float32)
  vocab = tf.shape(logits)[-1]
  if label_smoothing:
    labels = tf.one_hot(targets, vocab)
    labels = labels * (1.0 - label_smoothing) + label_smoothing / tf.cast(vocab, tf.float32)
    per_token = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
  else:
    per_token = sparse_cross_entropy(targets, logits)  # [B, T]
  weights = tf.cast(mask, tf.float32)
  return tf.reduce_sum(per_token * weights), tf.reduce_sum(weights)


@tf.custom_gradient
def sparse_cross_entropy(targets, logits):
  """Per-token cross-entropy, as `tf.nn.sparse_softmax_cross_entropy_with_logits`, faster on CPU.

  The same numbers (log-sum-exp minus the target's logit), from a few passes over the [..., V]
  logits, each spread over the CPU's threads. TF's fused kernel took 36 ms for the forward and
  backward pass of [64, 49, 5000] logits on 2 cores, this 16 ms; in a training step it was the
  slowest op after the matmuls (docs/performance.md). The gradient is softmax - one_hot, formed
  from the forward pass's exponentials. (A scatter at the targets instead of the one-hot
  product was as fast at best but took from 3 to 47 ms in a training step.)

  Args:
    targets: int [...] ids in [0, V).
    logits: float32 [..., V].

  Returns:
    float32 [...] the cross-entropy of each position.
  """
  top = tf.stop_gradient(tf.reduce_max(logits, -1, keepdims=True))
  exp = tf.exp(logits - top)
  total = tf.reduce_sum(exp, -1, keepdims=True)
  batch_dims = len(targets.shape)
  loss = tf.squeeze(tf.math.log(total) + top, -1) - tf.gather(
    logits, targets, axis=batch_dims, batch_dims=batch_dims
  )

  def grad(d_loss):
    d_loss = d_loss[..., tf.newaxis]
    one_hot = tf.one_hot(targets, tf.shape(logits)[-1], dtype=logits.dtype)
    return None, exp * (d_loss / total) - one_hot * d_loss

  return loss, grad


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


def correct_tokens(targets, logits, mask):
  """How many unmasked targets the teacher-forced argmax predicts (float32 scalar).

  A target whose logit ties for the top counts as predicted. Compared with the maximum rather
  than found with `tf.argmax`: at a 5,000-word vocabulary on 2 CPU cores `tf.argmax` took
  about 8 ms of a training step, the maximum about 2 ms.
  """
  batch_dims = len(targets.shape)
  target_logits = tf.gather(logits, targets, axis=batch_dims, batch_dims=batch_dims)
  hits = tf.cast(target_logits >= tf.reduce_max(logits, -1), tf.float32)
  return tf.reduce_sum(hits * tf.cast(mask, tf.float32))


def token_accuracy(targets, logits, mask):
  """Share of unmasked targets that the teacher-forced argmax predicts (not a caption metric)."""
  count = tf.reduce_sum(tf.cast(mask, tf.float32))
  return correct_tokens(targets, logits, mask) / tf.maximum(count, 1.0)


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
    sums = self.sums(targets, outputs, mask)
    return self.from_sums(sums, sums["tokens"], sums["examples"])

  def sums(self, targets, outputs, mask):
    """The loss's parts summed over a batch, and what they are averaged over: a dict of float32
    scalars "cross_entropy" (over tokens), "attention_penalty" (over images), "tokens",
    "examples". Sums of several batches (micro-batches, replicas) add up."""
    ce, tokens = masked_cross_entropy_sum(targets, outputs["logits"], mask, self.label_smoothing)
    penalty = doubly_stochastic_penalty(outputs["attention"], mask)
    examples = tf.cast(tf.shape(targets)[0], tf.float32)
    return {
      "cross_entropy": ce,
      "attention_penalty": penalty * examples,
      "tokens": tokens,
      "examples": examples,
    }

  def from_sums(self, sums, tokens, examples):
    """(loss, its named parts) from `sums`, averaged over `tokens` and `examples` (those of
    the whole global batch when `sums` are one part's, so that the parts' losses add up to
    the global batch's loss and every token weighs the same)."""
    ce = sums["cross_entropy"] / tf.maximum(tokens, 1.0)
    penalty = sums["attention_penalty"] / tf.maximum(examples, 1.0)
    loss = ce + self.doubly_stochastic_weight * penalty
    return loss, {"loss": loss, "cross_entropy": ce, "attention_penalty": penalty}
