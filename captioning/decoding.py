"""In-graph, batched caption decoding: greedy and beam search.

Each decoder compiles one `tf.function` that encodes a batch of images and emits a word per
step for every image (and beam) at once, recording the attention weights of each step. A
caption that reaches `max_length` without emitting `<end>` is reported as unfinished, never
passed off as a complete caption. `build_decoder` picks one by `config.decode.method`.
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


class BeamSearchDecoder:
  """Batched beam search with a Captioner, in one `tf.function`.

  Every image keeps `beam_size` live hypotheses and a pool of `beam_size` finished ones. Each
  step extends every live hypothesis by every word, takes the best 2 * beam_size candidates,
  moves those that emit `<end>` to the finished pool and keeps the best `beam_size` others
  alive, so a beam never runs out of live hypotheses because some ended. Scores are summed
  log-probabilities. The result is the best finished caption, unless the best hypothesis cut
  at `max_length` words is more probable (the model would rather go on than end): then that one
  is returned and reported as unfinished, never as a complete caption. With `beam_size=1` the
  live hypothesis follows greedy decoding's path.

  Args:
    model: a built `Captioner`.
    max_length: the most words to emit (the `<end>` token not counted).
    start_id, end_id, pad_id: the tokenizer's special ids.
    beam_size: hypotheses kept per image.
    jit_compile: compile the decoding function with XLA.
  """

  def __init__(self, model, max_length, start_id, end_id, pad_id=0, beam_size=4, jit_compile=False):
    if max_length < 1:
      raise ValueError(f"decode max_length must be >= 1, got {max_length}")
    if beam_size < 1:
      raise ValueError(f"decode beam_size must be >= 1, got {beam_size}")
    if 2 * beam_size > model.decoder.vocab_size:
      raise ValueError(
        f"decode beam_size {beam_size} needs a vocabulary of at least "
        f"{2 * beam_size} words, got {model.decoder.vocab_size}"
      )
    self.model = model
    self.max_length = int(max_length)
    self.beam_size = int(beam_size)
    self.start_id, self.end_id, self.pad_id = start_id, end_id, pad_id
    self._decode = tf.function(self._decode_fn, jit_compile=jit_compile)

  def _decode_fn(self, images):
    model, decoder, k = self.model, self.model.decoder, self.beam_size
    steps = self.max_length + 1  # max_length words, then a step that may only emit <end>
    features = model.encode(images, training=False)  # [B, L, C]
    batch, locations = tf.shape(features)[0], tf.shape(features)[1]
    features = tf.repeat(features, k, axis=0)  # [B*K, L, C], beams of an image adjacent
    projected = decoder.precompute(features)
    state = decoder.initial_state(features)
    vocab = decoder.vocab_size
    neg_inf = tf.constant(-1e9, tf.float32)
    # Only the first beam is live at the start, so the first step does not repeat candidates.
    alive_score = tf.tile(
      tf.concat([[0.0], tf.fill([k - 1], neg_inf)], 0)[tf.newaxis], [batch, 1]
    )  # [B, K]
    alive_seq = tf.fill([batch, k, steps], tf.constant(self.pad_id, tf.int32))
    alive_att = tf.zeros([batch, k, steps, locations], features.dtype)
    fin_score = tf.fill([batch, k], neg_inf)
    fin_seq, fin_att = alive_seq, alive_att
    word = tf.fill([batch * k], tf.constant(self.start_id, tf.int32))
    is_end = tf.equal(tf.range(vocab), self.end_id)  # [V]
    offsets = tf.range(batch)[:, tf.newaxis] * k  # [B, 1]

    for t in tf.range(steps):
      logits, new_state, alpha, _ = decoder.step(word, state, features, projected)
      log_probs = tf.reshape(tf.nn.log_softmax(logits, axis=-1), [batch, k, vocab])
      last = tf.equal(t, steps - 1)
      # At the last step a hypothesis may only end, and only where <end> is its likeliest word
      # (as in greedy decoding): a caption cut at max_length is never passed off as finished.
      ends_here = tf.equal(tf.argmax(log_probs, -1, output_type=tf.int32), self.end_id)
      allowed = tf.logical_or(
        tf.logical_not(last), tf.logical_and(is_end, ends_here[..., tf.newaxis])
      )  # [B, K, V]
      log_probs = tf.where(allowed, log_probs, neg_inf)
      scores = tf.reshape(alive_score[..., tf.newaxis] + log_probs, [batch, k * vocab])
      top_score, top_index = tf.math.top_k(scores, k=2 * k)  # [B, 2K]
      beam, token = top_index // vocab, top_index % vocab
      at_t = tf.one_hot(t, steps, dtype=tf.int32)  # [T]
      seq = tf.gather(alive_seq, beam, batch_dims=1)  # [B, 2K, T]
      seq = seq * (1 - at_t) + token[..., tf.newaxis] * at_t
      att = tf.gather(alive_att, beam, batch_dims=1)  # [B, 2K, T, L]
      step_att = tf.gather(tf.reshape(alpha, [batch, k, -1]), beam, batch_dims=1)
      att = att + tf.cast(at_t, att.dtype)[:, tf.newaxis] * step_att[:, :, tf.newaxis]
      ended = tf.equal(token, self.end_id)

      # Finished pool: the best K of the old pool and the candidates that just ended.
      pool_score = tf.concat([fin_score, tf.where(ended, top_score, neg_inf)], axis=1)
      fin_score, pick = tf.math.top_k(pool_score, k=k)
      fin_seq = tf.gather(tf.concat([fin_seq, seq], 1), pick, batch_dims=1)
      fin_att = tf.gather(tf.concat([fin_att, att], 1), pick, batch_dims=1)

      # Live hypotheses: the best K candidates that did not end (kept as they were at the last
      # step, as the fallback of images with no finished caption).
      live_score, pick = tf.math.top_k(tf.where(ended, neg_inf, top_score), k=k)
      source = tf.reshape(tf.gather(beam, pick, batch_dims=1) + offsets, [-1])  # [B*K]
      alive_score = tf.where(last, alive_score, live_score)
      alive_seq = tf.where(last, alive_seq, tf.gather(seq, pick, batch_dims=1))
      alive_att = tf.where(last, alive_att, tf.gather(att, pick, batch_dims=1))
      state = [tf.gather(s, source) for s in new_state]  # unused after the last step
      word = tf.reshape(tf.gather(token, pick, batch_dims=1), [-1])

    best_live = tf.argmax(alive_score, axis=1, output_type=tf.int32)
    use_finished = fin_score[:, 0] >= tf.reduce_max(alive_score, axis=1)  # [B]
    tokens = tf.where(
      use_finished[:, tf.newaxis], fin_seq[:, 0], tf.gather(alive_seq, best_live, batch_dims=1)
    )
    attention = tf.where(
      use_finished[:, tf.newaxis, tf.newaxis],
      fin_att[:, 0],
      tf.gather(alive_att, best_live, batch_dims=1),
    )
    log_prob = tf.where(
      use_finished, fin_score[:, 0], tf.gather(alive_score, best_live, batch_dims=1)
    )
    return {"tokens": tokens, "attention": attention, "log_prob": log_prob}

  def __call__(self, images):
    """Decodes images [B, S, S, 3]; returns what `GreedyDecoder.__call__` does."""
    out = self._decode(tf.convert_to_tensor(images))
    out["finished"] = tf.reduce_any(tf.equal(out["tokens"], self.end_id), axis=1)
    return out


METHODS = ("greedy", "beam")


def build_decoder(decode_config, model, tokenizer, jit_compile=False):
  """The decoder that `decode_config` (a config's `decode` section) names.

  Args:
    decode_config: with `method` ("greedy" | "beam"), `max_length` and `beam_size`.
    model: a built `Captioner`.
    tokenizer: supplies the special ids.
    jit_compile: compile decoding with XLA.
  """
  ids = dict(
    start_id=tokenizer.start_id,
    end_id=tokenizer.end_id,
    pad_id=tokenizer.pad_id,
    jit_compile=jit_compile,
  )
  if decode_config.method == "greedy":
    return GreedyDecoder(model, decode_config.max_length, **ids)
  if decode_config.method == "beam":
    return BeamSearchDecoder(
      model, decode_config.max_length, beam_size=decode_config.beam_size, **ids
    )
  raise ValueError(f"decode.method must be one of {METHODS}, got {decode_config.method!r}")
