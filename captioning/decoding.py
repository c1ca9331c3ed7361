"""In-graph, batched caption search: greedy, beam search and sampling, as `config.decode` says.

`Search(model, tokenizer, **config.decode)` compiles one `tf.function` that encodes a batch of
images and emits a word per step for every image (and beam) at once, recording the attention
weights of each step. The searches use only the decoder contract of `models/decoders.py`
(`prepare`, `initial_state`, `step` over batch-first nested memory and state), so they work for
every decoder. A caption that reaches `max_length` without emitting `<end>` is reported as
unfinished, never passed off as a complete caption. The loop stops as soon as no caption can
change any more.
"""

import numpy as np
import tensorflow as tf

from captioning import decode_options
from captioning import registry
from captioning.models import captioner

_NEG_INF = -1e9


class Search:
  """Greedy search, beam search or sampling with a Captioner.

  Greedy search emits the likeliest word at each step; sampling draws it from the model's
  distribution, sharpened by `temperature` (0 is greedy search) and cut to the `top_k` likeliest
  words and to the smallest set of likeliest words whose probability reaches `top_p` (nucleus
  sampling). Draws are stateless, keyed on (seed, step): the same seed gives the same captions.

  Beam search keeps `beam_size` live hypotheses and a pool of `beam_size` finished ones per
  image. Each step extends every live hypothesis by every word and takes the best 2 * beam_size
  candidates; those that emit `<end>` among the best beam_size enter the finished pool (as in
  Hugging Face's beam scorer, so a beam of one without length penalty is greedy search), and
  the best beam_size that do not end stay alive, so a beam never runs out of live hypotheses. Live
  hypotheses are ranked by summed log-probability; finished ones by their score, the summed
  log-probability divided by the length penalty lp(n) of their n tokens (`<end>` counted):
  "none" lp = 1, "gnmt" lp = ((5 + n) / 6) ** alpha (Wu et al., 2016), "average" lp = n. The
  result is the `n_best` best finished captions, unless a hypothesis cut at `max_length` words
  scores better (the model would rather go on than end): then it is returned and reported as
  unfinished.

  In every method the step after `max_length` words may only emit `<end>`, and only where the
  method would choose `<end>` anyway; `<pad>` and `<start>` are never emitted. With
  `no_repeat_ngram_size=n`, no caption repeats an n-gram of words (`<end>` is never banned).

  Args:
    model: a built `Captioner` (anything with `encode(images)` and a contract `decoder`).
    tokenizer: supplies `start_id`, `end_id` and `pad_id`.
    method: "greedy", "beam" or "sample".
    max_length: the most words to emit (the `<end>` token not counted).
    beam_size: hypotheses kept per image by beam search.
    n_best: captions returned per image (beam search; at most beam_size).
    length_penalty: "none", "gnmt" or "average": how beam search weighs finished captions of
      different lengths.
    length_penalty_alpha: the exponent of the "gnmt" penalty (0 is no penalty).
    temperature: sampling divides log-probabilities by it (0: the likeliest word).
    top_k: sampling draws from the k likeliest words only (0: all).
    top_p: sampling draws from the fewest likeliest words whose probability reaches p (1: all).
    no_repeat_ngram_size: 0, or n >= 2: never repeat an n-gram (3: no repeated trigram).
    seed: the default sampling seed (`__call__` may pass another).
    jit_compile: compile the search with XLA.
  """

  def __init__(
    self,
    model,
    tokenizer,
    *,
    method,
    max_length,
    beam_size=1,
    n_best=1,
    length_penalty="none",
    length_penalty_alpha=0.6,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    no_repeat_ngram_size=0,
    seed=0,
    jit_compile=False,
  ):
    decode_options.check_options(
      method=method,
      max_length=max_length,
      beam_size=beam_size,
      n_best=n_best,
      length_penalty=length_penalty,
      length_penalty_alpha=length_penalty_alpha,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      no_repeat_ngram_size=no_repeat_ngram_size,
    )
    max_steps = model.decoder.max_steps
    if max_steps is not None and max_length + 1 > max_steps:
      raise ValueError(
        f"max_length {max_length} needs a decoder of at least {max_length + 1} positions "
        f"(`<end>` after {max_length} words); the decoder has {max_steps} "
        "(config.model.decoder.max_length)"
      )
    vocab = model.decoder.vocab_size
    if method == "beam" and 2 * beam_size > vocab:
      raise ValueError(
        f"beam_size {beam_size} needs a vocabulary of at least {2 * beam_size} words, got {vocab}"
      )
    if top_k > vocab:
      raise ValueError(f"top_k {top_k} is more than the vocabulary's {vocab} words")
    self.model = model
    self.method = method
    self.max_length = int(max_length)
    self.beam_size = int(beam_size) if method == "beam" else 1
    self.n_best = int(n_best)
    self.length_penalty = length_penalty
    self.length_penalty_alpha = float(length_penalty_alpha)
    self.temperature = float(temperature)
    self.top_k, self.top_p = int(top_k), float(top_p)
    self.no_repeat_ngram_size = int(no_repeat_ngram_size)
    self.seed = int(seed)
    self.start_id, self.end_id = tokenizer.start_id, tokenizer.end_id
    self.pad_id = tokenizer.pad_id
    # [V]: the ids no search may emit, built once rather than at every step.
    never = np.zeros([vocab], bool)
    never[[self.pad_id, self.start_id]] = True
    self._never_words = tf.constant(never)
    body = self._beam if method == "beam" else self._sequential
    self._search = tf.function(body, jit_compile=jit_compile)

  def __call__(self, images, seed=None):
    """Decodes images [B, S, S, 3] (or a dict with "image" or cached "features").

    Args:
      images: the batch.
      seed: sampling only: an int or an int32 [2] tensor keying the draws (default: the
        `seed` option). Another seed does not retrace the search.

    Returns:
      A dict of tensors, T = max_length + 1: "tokens" [B, T] (words, then `<end>`, then
      padding), "attention" [B, T, L] (zeros after `<end>`), "log_prob" [B] (the model's
      log-probability of the caption), "score" [B] (what the search ranks by: log_prob over the
      length penalty), "finished" [B] (False where `<end>` never came within max_length words),
      and the n-best lists "n_best_tokens" [B, N, T], "n_best_log_prob", "n_best_score",
      "n_best_finished" [B, N] (best first; the first is the caption above).
    """
    if isinstance(images, dict):
      images = {k: tf.convert_to_tensor(v) for k, v in images.items() if k in captioner.IMAGE_KEYS}
    else:
      images = tf.convert_to_tensor(images)
    seed = tf.cast(self.seed if seed is None else seed, tf.int32)
    if seed.shape.rank == 0:
      seed = tf.stack([0, seed])
    out = self._search(images, seed)
    out["n_best_finished"] = tf.reduce_any(tf.equal(out["n_best_tokens"], self.end_id), axis=2)
    out["finished"] = out["n_best_finished"][:, 0]
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

  def _log_probs(self, logits, words, t):
    """log p(word) [N, V] after a step, with the words no search may emit ruled out: `<pad>`
    and `<start>`, and with the repetition guard on, the words that would repeat an n-gram of
    `words` [N, T] (the words emitted before step t). The scores stay the model's own
    log-probabilities, not renormalised."""
    log_probs = tf.cast(tf.nn.log_softmax(logits, axis=-1), tf.float32)
    banned = self._never_words[tf.newaxis]
    if self.no_repeat_ngram_size:
      banned = tf.logical_or(banned, self._repeats(words, t))
    return tf.where(banned, _NEG_INF, log_probs)

  def _repeats(self, words, t):
    """bool [N, V]: the words that would complete an n-gram already among the first t of
    `words` [N, T]; never `<end>`."""
    n, steps = self.no_repeat_ngram_size, words.shape[1]
    vocab = self._never_words.shape[0]
    count = steps - n + 1  # n-gram windows in a caption of T words
    if count < 1:
      return tf.zeros([tf.shape(words)[0], vocab], tf.bool)
    windows = tf.stack([words[:, i : i + count] for i in range(n)], axis=-1)  # [N, W, n]
    # The last n - 1 words, [N, n - 1] (indices clipped while fewer than n - 1 were emitted).
    recent = tf.gather(words, tf.maximum(t - (n - 1), 0) + tf.range(n - 1), axis=1)
    same_start = tf.reduce_all(tf.equal(windows[..., :-1], recent[:, tf.newaxis]), axis=-1)
    # Only windows of emitted words count (window j ends at word j + n - 1 < t).
    matched = tf.logical_and(same_start, (tf.range(count) < t - (n - 1))[tf.newaxis])
    rows = tf.broadcast_to(tf.range(tf.shape(words)[0])[:, tf.newaxis], tf.shape(matched))
    indices = tf.reshape(tf.stack([rows, windows[..., -1]], axis=-1), [-1, 2])
    hits = tf.tensor_scatter_nd_max(
      tf.zeros([tf.shape(words)[0], vocab], tf.int32),
      indices,
      tf.reshape(tf.cast(matched, tf.int32), [-1]),
    )
    return tf.logical_and(hits > 0, tf.not_equal(tf.range(vocab), self.end_id))

  def _choose(self, log_probs, seed, t):
    """The next word [N] of greedy search or sampling from log_probs [N, V]."""
    if self.method == "greedy" or self.temperature == 0.0:
      return tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    logits = log_probs / self.temperature
    excluded = tf.constant(-np.inf, tf.float32)
    if self.top_k:
      kth = tf.math.top_k(logits, k=self.top_k).values[:, -1:]
      logits = tf.where(logits < kth, excluded, logits)
    if self.top_p < 1.0:
      ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
      before = tf.cumsum(tf.nn.softmax(ranked), axis=-1, exclusive=True)
      # The likeliest words until their probability reaches top_p (the first always).
      least = tf.reduce_min(tf.where(before < self.top_p, ranked, np.inf), -1, keepdims=True)
      logits = tf.where(logits < least, excluded, logits)
    step_seed = tf.random.experimental.stateless_fold_in(seed, t)
    return tf.random.stateless_categorical(logits, 1, step_seed, dtype=tf.int32)[:, 0]

  def _penalty(self, length):
    """The length penalty lp(n) of a caption of n tokens (float32 scalar)."""
    length = tf.cast(length, tf.float32)
    if self.length_penalty == "gnmt":
      return ((5.0 + length) / 6.0) ** self.length_penalty_alpha
    if self.length_penalty == "average":
      return length
    return tf.constant(1.0)

  def _sequential(self, images, seed):
    """Greedy search or sampling: one caption per image, a word per step."""
    decoder = self.model.decoder
    memory, state, batch, locations, dtype = self._begin(images, 1)
    steps = self.max_length + 1  # max_length words, then a step that may only emit <end>
    pad = tf.constant(self.pad_id, tf.int32)
    word = tf.fill([batch], tf.constant(self.start_id, tf.int32))
    finished = tf.zeros([batch], tf.bool)
    tokens = tf.fill([batch, steps], pad)
    attention = tf.zeros([batch, steps, locations], dtype)
    log_prob = tf.zeros([batch], tf.float32)
    for t in tf.range(steps):
      logits, state, outputs = decoder.step(word, state, memory)
      log_probs = self._log_probs(logits, tokens, t)  # [B, V]
      next_word = self._choose(log_probs, seed, t)
      picked = tf.gather(log_probs, next_word, batch_dims=1)
      # Done already; the last step chose a word, not <end>: cut at max_length; or nothing left.
      cut = tf.logical_or(finished, picked <= _NEG_INF)
      cut = tf.logical_or(cut, tf.logical_and(t == steps - 1, next_word != self.end_id))
      log_prob += tf.where(cut, 0.0, picked)
      next_word = tf.where(cut, pad, next_word)
      at_t = tf.one_hot(t, steps, dtype=tf.int32)  # [T]: dense writes keep XLA's shapes fixed
      tokens = tokens * (1 - at_t) + next_word[:, tf.newaxis] * at_t
      alpha = outputs["attention"]  # none where nothing is emitted (after <end>, or cut)
      alpha = tf.where(cut[:, tf.newaxis], tf.zeros_like(alpha), alpha)
      attention += tf.cast(at_t, dtype)[:, tf.newaxis] * alpha[:, tf.newaxis]
      finished = tf.logical_or(finished, tf.equal(next_word, self.end_id))
      word = next_word
      if tf.reduce_all(finished):
        break
    return {
      "tokens": tokens,  # [B, T]
      "attention": attention,  # [B, T, L]
      "log_prob": log_prob,
      "score": log_prob,
      "n_best_tokens": tokens[:, tf.newaxis],
      "n_best_log_prob": log_prob[:, tf.newaxis],
      "n_best_score": log_prob[:, tf.newaxis],
    }

  def _beam(self, images, seed):
    del seed  # beam search draws nothing
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
    fin_score = tf.fill([batch, k], neg_inf)  # log_prob / lp(length)
    fin_log_prob = fin_score
    fin_seq, fin_att = alive_seq, alive_att
    word = tf.fill([batch * k], tf.constant(self.start_id, tf.int32))
    offsets = tf.range(batch)[:, tf.newaxis] * k  # [B, 1]
    in_top_k = tf.range(2 * k) < k  # [2K]: the candidates whose <end> counts
    best_possible = self._penalty(steps)  # a live hypothesis's score is at most its sum / this

    for t in tf.range(steps):
      logits, new_state, outputs = decoder.step(word, state, memory)
      log_probs = self._log_probs(logits, tf.reshape(alive_seq, [batch * k, steps]), t)
      log_probs = tf.reshape(log_probs, [batch, k, vocab])
      last = tf.equal(t, steps - 1)
      # The last step may only end, and only where <end> is the hypothesis's likeliest word.
      ends = tf.logical_and(
        tf.equal(tf.range(vocab), self.end_id),
        tf.equal(tf.argmax(log_probs, -1, output_type=tf.int32), self.end_id)[..., tf.newaxis],
      )
      log_probs = tf.where(tf.logical_or(tf.logical_not(last), ends), log_probs, neg_inf)
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

      # Finished pool: the best K of the old pool and the best K candidates that just ended.
      # (Candidates ruled out at the last step score about -1e9: never admitted.)
      admitted = tf.logical_and(tf.logical_and(ended, in_top_k), top_score > neg_inf / 2)
      pool_score = tf.concat(
        [fin_score, tf.where(admitted, top_score / self._penalty(t + 1), neg_inf)], 1
      )
      pool_log_prob = tf.concat([fin_log_prob, tf.where(admitted, top_score, neg_inf)], 1)
      fin_score, pick = tf.math.top_k(pool_score, k=k)
      fin_log_prob = tf.gather(pool_log_prob, pick, batch_dims=1)
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
      # Done when every image has n_best finished captions that no live hypothesis can catch
      # up with (log-probabilities only fall, and the penalty only grows with length).
      reachable = tf.reduce_max(alive_score, axis=1) / best_possible
      if tf.reduce_all(fin_score[:, self.n_best - 1] >= reachable):
        break

    # The n best of the finished pool and the hypotheses cut at max_length words; on ties the
    # finished caption comes first (top_k keeps the lower index).
    score, pick = tf.math.top_k(
      tf.concat([fin_score, alive_score / self._penalty(self.max_length)], 1), k=self.n_best
    )
    choose = lambda finished, alive: tf.gather(tf.concat([finished, alive], 1), pick, batch_dims=1)
    n_best_tokens = choose(fin_seq, alive_seq)
    n_best_log_prob = choose(fin_log_prob, alive_score)
    best = pick[:, :1]
    return {
      "tokens": n_best_tokens[:, 0],
      "attention": tf.gather(tf.concat([fin_att, alive_att], 1), best, batch_dims=1)[:, 0],
      "log_prob": n_best_log_prob[:, 0],
      "score": score[:, 0],
      "n_best_tokens": n_best_tokens,
      "n_best_log_prob": n_best_log_prob,
      "n_best_score": score,
    }


def _keep_if(condition, old, new):
  """`tf.where(condition, old, new)` for a scalar condition, with `old`'s static shape.

  Broadcasting a static batch of 1 against a batch the graph does not know gives an unknown
  batch, which a loop variable may not change to: a batch of one image would not trace.
  """
  out = tf.where(condition, old, new)
  out.set_shape(old.shape)
  return out


def override(decode_config, method=None, beam_size=None, n_best=None):
  """`config.decode` as a dict, with another method, beam size or n-best count where given."""
  decode = dict(decode_config)
  given = {"method": method, "beam_size": beam_size, "n_best": n_best}
  decode.update({key: value for key, value in given.items() if value})
  decode_options.check_options(**decode)
  return decode


def build_search(decode_config, model, tokenizer, jit_compile=False):
  """The search `config.decode` describes; the section reaches `Search` whole.

  Args:
    decode_config: the `decode` section (the arguments of `Search`).
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
