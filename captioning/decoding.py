"""In-graph, batched caption search: greedy and beam search, as `config.decode` says.

`Search(model, tokenizer, **config.decode)` compiles one `tf.function` that encodes a batch of
images and emits a word per step for every image (and beam) at once, recording the attention
weights of each step. Both searches use only the decoder contract of `models/decoders.py`
(`prepare`, `initial_state`, `step` over batch-first nested memory and state), so they work for
every decoder. A caption that reaches `max_length` without emitting `<end>` is reported as
unfinished, never passed off as a complete caption.
"""

import numpy as np
import tensorflow as tf

from captioning import registry
from captioning.models import captioner

METHODS = ("greedy", "beam")
_NEG_INF = -1e9


class Search:
  """Greedy or beam search with a Captioner.

  Beam search keeps `beam_size` live hypotheses and a pool of `beam_size` finished ones per
  image. Each step extends every live hypothesis by every word, takes the best 2 * beam_size
  candidates, moves those that emit `<end>` to the finished pool and keeps the best `beam_size`
  others alive, so a beam never runs out of live hypotheses because some ended. Scores are
  summed log-probabilities. The result is the best finished caption, unless the best hypothesis
  cut at `max_length` words is more probable (the model would rather go on than end): then that
  one is returned and reported as unfinished. With `beam_size=1` the live hypothesis follows
  greedy decoding's path.

  In both searches the step after `max_length` words may only emit `<end>`, and only where
  `<end>` is the likeliest word; `<pad>` and `<start>` are never emitted.

  Args:
    model: a built `Captioner` (anything with `encode(images)` and a contract `decoder`).
    tokenizer: supplies `start_id`, `end_id` and `pad_id`.
    method: "greedy" or "beam".
    max_length: the most words to emit (the `<end>` token not counted).
    beam_size: hypotheses kept per image by beam search.
    jit_compile: compile the search with XLA.
  """

  def __init__(self, model, tokenizer, *, method, max_length, beam_size=1, jit_compile=False):
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1, got {max_length}")
    if beam_size < 1:
      raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    max_steps = model.decoder.max_steps
    if max_steps is not None and max_length + 1 > max_steps:
      raise ValueError(
        f"max_length {max_length} needs a decoder of at least {max_length + 1} positions "
        f"(`<end>` after {max_length} words); the decoder has {max_steps} "
        "(config.model.decoder.max_length)"
      )
    if method == "beam" and 2 * beam_size > model.decoder.vocab_size:
      raise ValueError(
        f"beam_size {beam_size} needs a vocabulary of at least {2 * beam_size} words, "
        f"got {model.decoder.vocab_size}"
      )
    self.model = model
    self.method = method
    self.max_length = int(max_length)
    self.beam_size = int(beam_size)
    self.start_id, self.end_id = tokenizer.start_id, tokenizer.end_id
    self.pad_id = tokenizer.pad_id
    # [V]: the ids no search may emit, built once rather than at every step.
    never = np.zeros([model.decoder.vocab_size], bool)
    never[[self.pad_id, self.start_id]] = True
    self._never_words = tf.constant(never)
    body = self._greedy if method == "greedy" else self._beam
    self._search = tf.function(body, jit_compile=jit_compile)

  def __call__(self, images):
    """Decodes images [B, S, S, 3] (or a dict with "image" or cached "features").

    Returns:
      A dict of tensors: "tokens" [B, max_length + 1] (words, then `<end>`, then padding),
      "attention" [B, max_length + 1, L] (zeros after `<end>`), "log_prob" [B] of the caption,
      and "finished" [B], False where the model never chose `<end>` within max_length words.
    """
    if isinstance(images, dict):
      images = {k: tf.convert_to_tensor(v) for k, v in images.items() if k in captioner.IMAGE_KEYS}
    else:
      images = tf.convert_to_tensor(images)
    out = self._search(images)
    out["finished"] = tf.reduce_any(tf.equal(out["tokens"], self.end_id), axis=1)
    return out

  def _begin(self, images, copies):
    """Encodes the images and starts the decoder, each row repeated `copies` times.

    Returns:
      (memory, state, batch, locations, dtype of the features).
    """
    decoder = self.model.decoder
    features = self.model.encode(images, training=False)  # [B, L, C]
    batch, locations = tf.shape(features)[0], tf.shape(features)[1]
    memory = decoder.prepare(features)
    state = decoder.initial_state(memory)
    if copies > 1:  # the copies of an image are adjacent rows: [B*K, ...]
      repeat = lambda x: tf.repeat(x, copies, axis=0)
      memory, state = tf.nest.map_structure(repeat, (memory, state))
    return memory, state, batch, locations, features.dtype

  def _log_probs(self, logits):
    """log p(word) [..., V], with `<pad>` and `<start>` ruled out: they are never words (the
    scores stay the model's own log-probabilities, not renormalised)."""
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    return tf.where(self._never_words, tf.cast(_NEG_INF, log_probs.dtype), log_probs)

  def _may_end_only(self, log_probs):
    """Where the last step may go: bool [..., V], only `<end>`, and only where it is likeliest
    (so a caption cut at max_length is never passed off as finished)."""
    likeliest = tf.argmax(log_probs, -1, output_type=tf.int32)  # [...]
    return tf.logical_and(
      tf.equal(tf.range(tf.shape(log_probs)[-1]), self.end_id),
      tf.equal(likeliest, self.end_id)[..., tf.newaxis],
    )

  def _greedy(self, images):
    decoder = self.model.decoder
    memory, state, batch, _, dtype = self._begin(images, 1)
    steps = self.max_length + 1  # max_length words, then a step that may only emit <end>
    word = tf.fill([batch], tf.constant(self.start_id, tf.int32))
    finished = tf.zeros([batch], tf.bool)
    tokens = tf.TensorArray(tf.int32, size=steps)
    attention = tf.TensorArray(dtype, size=steps)
    log_prob = tf.zeros([batch], tf.float32)
    for t in tf.range(steps):
      logits, state, outputs = decoder.step(word, state, memory)
      log_probs = self._log_probs(logits)  # [B, V]
      allowed = tf.logical_or(tf.not_equal(t, steps - 1), self._may_end_only(log_probs))
      log_probs = tf.where(allowed, log_probs, _NEG_INF)
      next_word = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
      picked = tf.gather(log_probs, next_word, batch_dims=1)
      cut = tf.logical_or(finished, picked <= _NEG_INF)  # done, or nothing allowed at the end
      log_prob += tf.where(cut, 0.0, picked)
      next_word = tf.where(cut, tf.constant(self.pad_id, tf.int32), next_word)
      alpha = outputs["attention"]
      tokens = tokens.write(t, next_word)
      attention = attention.write(t, tf.where(finished[:, None], tf.zeros_like(alpha), alpha))
      finished = tf.logical_or(finished, tf.equal(next_word, self.end_id))
      word = next_word
    return {
      "tokens": tf.transpose(tokens.stack()),  # [B, T]
      "attention": tf.transpose(attention.stack(), [1, 0, 2]),  # [B, T, L]
      "log_prob": log_prob,
    }

  def _beam(self, images):
    decoder, k = self.model.decoder, self.beam_size
    steps = self.max_length + 1
    memory, state, batch, locations, dtype = self._begin(images, k)
    vocab = decoder.vocab_size
    neg_inf = tf.constant(_NEG_INF, tf.float32)
    # Only the first beam is live at the start, so the first step does not repeat candidates.
    alive_score = tf.tile(
      tf.concat([[0.0], tf.fill([k - 1], neg_inf)], 0)[tf.newaxis], [batch, 1]
    )  # [B, K]
    alive_seq = tf.fill([batch, k, steps], tf.constant(self.pad_id, tf.int32))
    alive_att = tf.zeros([batch, k, steps, locations], dtype)
    fin_score = tf.fill([batch, k], neg_inf)
    fin_seq, fin_att = alive_seq, alive_att
    word = tf.fill([batch * k], tf.constant(self.start_id, tf.int32))
    offsets = tf.range(batch)[:, tf.newaxis] * k  # [B, 1]

    for t in tf.range(steps):
      logits, new_state, outputs = decoder.step(word, state, memory)
      log_probs = tf.reshape(self._log_probs(logits), [batch, k, vocab])
      last = tf.equal(t, steps - 1)
      allowed = tf.logical_or(tf.logical_not(last), self._may_end_only(log_probs))  # [B, K, V]
      log_probs = tf.where(allowed, log_probs, neg_inf)
      scores = tf.reshape(alive_score[..., tf.newaxis] + log_probs, [batch, k * vocab])
      top_score, top_index = tf.math.top_k(scores, k=2 * k)  # [B, 2K]
      beam, token = top_index // vocab, top_index % vocab
      at_t = tf.one_hot(t, steps, dtype=tf.int32)  # [T]
      seq = tf.gather(alive_seq, beam, batch_dims=1)  # [B, 2K, T]
      seq = seq * (1 - at_t) + token[..., tf.newaxis] * at_t
      att = tf.gather(alive_att, beam, batch_dims=1)  # [B, 2K, T, L]
      step_att = tf.gather(tf.reshape(outputs["attention"], [batch, k, -1]), beam, batch_dims=1)
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
      alive_score = _keep_if(last, alive_score, live_score)
      alive_seq = _keep_if(last, alive_seq, tf.gather(seq, pick, batch_dims=1))
      alive_att = _keep_if(last, alive_att, tf.gather(att, pick, batch_dims=1))
      # The decoder contract: every state tensor is batch-first, so one gather reorders it.
      state = tf.nest.map_structure(lambda s, i=source: tf.gather(s, i), new_state)
      word = tf.reshape(tf.gather(token, pick, batch_dims=1), [-1])

    best_live = tf.argmax(alive_score, axis=1, output_type=tf.int32)
    use_finished = fin_score[:, 0] >= tf.reduce_max(alive_score, axis=1)  # [B]
    return {
      "tokens": tf.where(
        use_finished[:, tf.newaxis],
        fin_seq[:, 0],
        tf.gather(alive_seq, best_live, batch_dims=1),
      ),
      "attention": tf.where(
        use_finished[:, tf.newaxis, tf.newaxis],
        fin_att[:, 0],
        tf.gather(alive_att, best_live, batch_dims=1),
      ),
      "log_prob": tf.where(
        use_finished, fin_score[:, 0], tf.gather(alive_score, best_live, batch_dims=1)
      ),
    }


def _keep_if(condition, old, new):
  """`tf.where(condition, old, new)` for a scalar condition, with `old`'s static shape.

  Broadcasting a static batch of 1 against a batch the graph does not know gives an unknown
  batch, which a loop variable may not change to: a batch of one image would not trace.
  """
  out = tf.where(condition, old, new)
  out.set_shape(old.shape)
  return out


def override(decode_config, method=None, beam_size=None):
  """`config.decode` as a dict, with another method or beam size where they are given."""
  decode = dict(decode_config)
  decode["method"] = method or decode["method"]
  decode["beam_size"] = beam_size or decode["beam_size"]
  if decode["method"] not in METHODS:
    raise ValueError(f"decode method must be one of {METHODS}, got {decode['method']!r}")
  return decode


def build_search(decode_config, model, tokenizer, jit_compile=False):
  """The search `config.decode` describes; the section reaches `Search` whole.

  Args:
    decode_config: the `decode` section: `method`, `max_length`, `beam_size`.
    model: a built `Captioner`.
    tokenizer: supplies the special ids.
    jit_compile: compile the search with XLA.
  """
  return registry.call_with_section(
    Search,
    decode_config,
    "config.decode",
    model=model,
    tokenizer=tokenizer,
    jit_compile=jit_compile,
  )
