"""In-graph, batched caption decoding.

`GreedyDecoder` compiles one `tf.function` that encodes a batch of images and emits a word per
step for every image at once, recording the attention weights of each step. A caption that
reaches `max_length` without emitting `<end>` is reported as unfinished, never passed off as a
complete caption.
"""

import tensorflow as tf


class GreedyDecoder:
  """Greedy decoding with a Captioner.

  Args:
    model: a built `Captioner`.
    max_length: the most words to emit (the `<end>` token not counted).
    start_id, end_id, pad_id: the tokenizer's special ids.
    jit_compile: compile the decoding function with XLA.
  """

  def __init__(self, model, max_length, start_id, end_id, pad_id=0, jit_compile=False):
    if max_length < 1:
      raise ValueError(f"decode max_length must be >= 1, got {max_length}")
    self.model = model
    self.max_length = int(max_length)
    self.start_id, self.end_id, self.pad_id = start_id, end_id, pad_id
    self._decode = tf.function(self._decode_fn, jit_compile=jit_compile)

  def _decode_fn(self, images):
    model, decoder = self.model, self.model.decoder
    features = model.encode(images, training=False)  # [B, L, C]
    projected = decoder.precompute(features)  # [B, L, A]
    batch = tf.shape(images)[0]
    state = decoder.initial_state(features)
    word = tf.fill([batch], tf.constant(self.start_id, tf.int32))
    finished = tf.zeros([batch], tf.bool)
    tokens = tf.TensorArray(tf.int32, size=self.max_length + 1)
    attention = tf.TensorArray(features.dtype, size=self.max_length + 1)
    log_prob = tf.zeros([batch], tf.float32)
    # One step more than max_length words: the last step may still emit `<end>`.
    for t in tf.range(self.max_length + 1):
      logits, state, alpha, _ = decoder.step(word, state, features, projected)
      log_probs = tf.nn.log_softmax(logits, axis=-1)  # [B, V]
      next_word = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
      picked = tf.gather(log_probs, next_word, batch_dims=1)
      # The extra last step only asks whether the caption ends; no word past max_length.
      is_last = tf.equal(t, self.max_length)
      cut = tf.logical_or(finished, tf.logical_and(is_last, tf.not_equal(next_word, self.end_id)))
      log_prob += tf.where(cut, 0.0, picked)
      next_word = tf.where(cut, tf.constant(self.pad_id, tf.int32), next_word)
      tokens = tokens.write(t, next_word)
      attention = attention.write(t, tf.where(finished[:, None], tf.zeros_like(alpha), alpha))
      finished = tf.logical_or(finished, tf.equal(next_word, self.end_id))
      word = next_word
    tokens = tf.transpose(tokens.stack())  # [B, T]
    attention = tf.transpose(attention.stack(), [1, 0, 2])  # [B, T, L]
    return {"tokens": tokens, "attention": attention, "log_prob": log_prob}

  def __call__(self, images):
    """Decodes images [B, S, S, 3].

    Returns:
      A dict of tensors: "tokens" [B, max_length + 1] (words, then `<end>`, then padding),
      "attention" [B, max_length + 1, L] (zeros after `<end>`), "log_prob" [B] of the caption,
      and "finished" [B], False where the model never chose `<end>` within max_length words.
    """
    out = self._decode(tf.convert_to_tensor(images))
    out["finished"] = tf.reduce_any(tf.equal(out["tokens"], self.end_id), axis=1)
    return out
