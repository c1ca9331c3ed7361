"""Losses: masked cross-entropy and the doubly stochastic attention regulariser."""

import numpy as np
import pytest
import tensorflow as tf

from captioning import losses


def test_masked_cross_entropy_ignores_padding():
  logits = tf.random.normal([2, 4, 7], seed=0)
  targets = tf.constant([[1, 2, 3, 0], [4, 0, 0, 0]])
  mask = tf.not_equal(targets, 0)
  loss, count = losses.masked_cross_entropy(targets, logits, mask)
  per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits).numpy()
  expected = (per_token[0, :3].sum() + per_token[1, 0]) / 4
  assert float(count) == 4 and float(loss) == pytest.approx(expected, rel=1e-5)
  # Garbage logits at padded positions change nothing.
  noisy = logits.numpy()
  noisy[0, 3] += 100.0
  noisy[1, 1:] -= 50.0
  assert float(losses.masked_cross_entropy(targets, tf.constant(noisy), mask)[0]) == (
    pytest.approx(expected, rel=1e-5)
  )


def test_label_smoothing_matches_its_definition():
  logits = tf.random.normal([1, 3, 5], seed=1)
  targets = tf.constant([[1, 2, 3]])
  mask = tf.ones([1, 3], tf.bool)
  smooth, _ = losses.masked_cross_entropy(targets, logits, mask, label_smoothing=0.1)
  log_probs = tf.nn.log_softmax(logits).numpy()[0]
  labels = np.full([3, 5], 0.1 / 5)
  labels[np.arange(3), [1, 2, 3]] += 0.9
  assert float(smooth) == pytest.approx(-(labels * log_probs).sum(-1).mean(), rel=1e-5)


def test_doubly_stochastic_penalty():
  # Each location attended exactly once over the caption: no penalty.
  once = tf.eye(4)[tf.newaxis]  # [1, T=4, L=4]
  assert float(losses.doubly_stochastic_penalty(once, tf.ones([1, 4], tf.bool))) == 0.0
  # Staring at one location: (1-4)^2 there, (1-0)^2 at the other three, averaged over L.
  stare = tf.one_hot([[0, 0, 0, 0]], 4)
  assert float(losses.doubly_stochastic_penalty(stare, tf.ones([1, 4], tf.bool))) == (
    pytest.approx((9 + 3) / 4)
  )
  # Padding steps do not count.
  mask = tf.constant([[True, True, False, False]])
  assert float(losses.doubly_stochastic_penalty(stare, mask)) == pytest.approx((1 + 3) / 4)


def test_token_accuracy_counts_only_real_tokens():
  logits = tf.one_hot([[1, 2, 0]], 3) * 10.0
  targets = tf.constant([[1, 0, 1]])
  mask = tf.constant([[True, False, True]])
  assert float(losses.token_accuracy(targets, logits, mask)) == pytest.approx(0.5)


def test_caption_loss_adds_the_weighted_penalty_and_checks_its_settings():
  logits = tf.random.normal([2, 3, 5], seed=1)
  attention = tf.nn.softmax(tf.random.normal([2, 3, 4], seed=2))
  targets = tf.constant([[1, 2, 0], [3, 4, 2]])
  mask = tf.not_equal(targets, 0)
  outputs = {"logits": logits, "attention": attention}
  loss, parts = losses.CaptionLoss(doubly_stochastic_weight=0.5)(targets, outputs, mask)
  ce, _ = losses.masked_cross_entropy(targets, logits, mask)
  penalty = losses.doubly_stochastic_penalty(attention, mask)
  assert float(loss) == pytest.approx(float(ce) + 0.5 * float(penalty), rel=1e-6)
  assert set(parts) == {"loss", "cross_entropy", "attention_penalty"}
  smoothed, _ = losses.CaptionLoss(label_smoothing=0.1)(targets, outputs, mask)
  assert float(smoothed) != pytest.approx(float(ce))
  with pytest.raises(ValueError, match="label_smoothing"):
    losses.CaptionLoss(label_smoothing=1.0)
  with pytest.raises(ValueError, match="doubly_stochastic_weight"):
    losses.CaptionLoss(doubly_stochastic_weight=-1.0)


def test_sparse_cross_entropy_equals_tf_and_its_gradient():
  logits = tf.random.normal([3, 5, 11], seed=2) * 4.0
  targets = tf.random.uniform([3, 5], 0, 11, tf.int32, seed=3)
  weights = tf.random.uniform([3, 5], seed=4)  # a masked sum's upstream gradient
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(logits)
    ours = losses.sparse_cross_entropy(targets, logits)
    theirs = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    ours_sum, theirs_sum = tf.reduce_sum(ours * weights), tf.reduce_sum(theirs * weights)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
    tape.gradient(ours_sum, logits), tape.gradient(theirs_sum, logits), rtol=1e-5, atol=1e-7
  )
  # Large logits do not overflow; a batch of one dimension works too.
  big = tf.constant([[1000.0, 0.0, -1000.0]])
  np.testing.assert_allclose(losses.sparse_cross_entropy(tf.constant([1]), big), [1000.0])
