"""The per-image, per-step Python-loop decoders benchmarks/decode.py times the batched search
against, written the way the TensorFlow image-captioning tutorial's `evaluate()` decodes: one
image at a time, the decoder's `step` called eagerly at every word.

`loop_greedy` takes the argmax until `<end>`; `loop_beam` is a Python beam search over one
image whose beams are the rows of the eager `step`. Both follow `decoding.Search`'s rules
(`<pad>` and `<start>` never emitted; the last step may only end, where `<end>` is likeliest;
an `<end>` counts only among the best beam_size candidates), so they find its captions.
"""

import numpy as np
import tensorflow as tf

# How `decoding.Search` rules a word out: a finite score, so sums of scores stay comparable.
_NEG_INF = np.float32(-1e9)


def _log_probs(logits, tokenizer):
  """float32 [rows, V] log p(word), `<pad>` and `<start>` ruled out as the search does."""
  log_probs = tf.nn.log_softmax(logits, axis=-1).numpy().astype(np.float32)
  log_probs[:, [tokenizer.pad_id, tokenizer.start_id]] = _NEG_INF
  return log_probs


def _start(model, image):
  """(memory, state) of the decoder for one image (a dict {"image" or "features": [1, ...]})."""
  memory = model.decoder.prepare(model.encode(image, training=False))
  return memory, model.decoder.initial_state(memory)


def loop_greedy(model, tokenizer, image, max_length):
  """Greedy decoding of one image, a Python loop of eager decoder steps (batch of one).

  Args:
    model: a built Captioner.
    tokenizer: supplies `start_id`, `end_id` and `pad_id`.
    image: {"image" or "features": [1, ...]}.
    max_length: the most words to emit (`<end>` not counted).

  Returns:
    {"tokens": the words, then `<end>` if the caption finished; "log_prob"; "finished";
    "steps": the decoder steps taken}.
  """
  memory, state = _start(model, image)
  word, tokens, log_prob = tokenizer.start_id, [], np.float32(0.0)
  for t in range(max_length + 1):
    logits, state, _ = model.decoder.step(tf.constant([word], tf.int32), state, memory)
    log_probs = _log_probs(logits, tokenizer)[0]  # [V]
    word = int(np.argmax(log_probs))
    if t == max_length and word != tokenizer.end_id:  # the last step may only end
      break
    tokens.append(word)
    log_prob += log_probs[word]
    if word == tokenizer.end_id:
      break
  finished = bool(tokens) and tokens[-1] == tokenizer.end_id
  return {"tokens": tokens, "log_prob": float(log_prob), "finished": finished, "steps": t + 1}


def loop_beam(model, tokenizer, image, max_length, beam_size):
  """Beam search over one image, a Python loop of eager decoder steps over the beams' rows.

  The search of `decoding.Search` (its length penalty "none"), one image at a time: each step
  scores every live hypothesis by every word and takes the best 2 * beam_size candidates; those
  among the best beam_size that end in `<end>` join the finished captions (the best beam_size
  kept), and the best beam_size that do not end stay alive, the decoder state reordered with
  `tf.gather`. It stops once the best finished caption scores at least as well as every live
  one (scores only fall, so no later caption can beat it), or after the step that follows
  `max_length` words. A live caption more probable than every finished one is returned
  unfinished.

  Args:
    model: a built Captioner.
    tokenizer: supplies `start_id`, `end_id` and `pad_id`.
    image: {"image" or "features": [1, ...]}.
    max_length: the most words to emit (`<end>` not counted).
    beam_size: live hypotheses kept.

  Returns:
    As `loop_greedy`.
  """
  end = tokenizer.end_id
  memory, state = _start(model, image)
  tiled = {1: memory}  # the image's memory repeated once per live row
  live = [((), np.float32(0.0))]  # (words, summed log-probability), best first; row i of state
  finished = []  # (words with <end>, score), best first
  for t in range(max_length + 1):
    rows = len(live)
    if rows not in tiled:
      tiled[rows] = tf.nest.map_structure(lambda m, n=rows: tf.repeat(m, n, axis=0), memory)
    words = [seq[-1] if seq else tokenizer.start_id for seq, _ in live]
    logits, new_state, _ = model.decoder.step(tf.constant(words, tf.int32), state, tiled[rows])
    log_probs = _log_probs(logits, tokenizer)  # [rows, V]
    if t == max_length:  # the last step may only end, and only where <end> is likeliest
      for (seq, score), row in zip(live, log_probs):
        if np.argmax(row) == end:
          finished.append((seq + (end,), score + row[end]))
      finished.sort(key=lambda f: -f[1])  # stable: on a tie the earlier stays first
      break
    scores = (np.array([score for _, score in live], np.float32)[:, None] + log_probs).ravel()
    vocab = log_probs.shape[1]
    survivors = []
    for rank, index in enumerate(np.argsort(-scores, kind="stable")[: 2 * beam_size]):
      row, word = divmod(int(index), vocab)
      if word == end:
        if rank < beam_size:  # an <end> below the best beam_size candidates is dropped
          finished.append((live[row][0] + (end,), scores[index]))
      elif len(survivors) < beam_size:
        survivors.append((row, word, scores[index]))
    finished = sorted(finished, key=lambda f: -f[1])[:beam_size]
    live = [(live[row][0] + (word,), score) for row, word, score in survivors]
    source = tf.constant([row for row, _, _ in survivors], tf.int32)
    state = tf.nest.map_structure(lambda s, i=source: tf.gather(s, i), new_state)
    if finished and finished[0][1] >= live[0][1]:
      break
  if finished and finished[0][1] >= live[0][1]:
    tokens, log_prob, done = *finished[0], True
  else:
    tokens, log_prob, done = *live[0], False
  return {"tokens": list(tokens), "log_prob": float(log_prob), "finished": done, "steps": t + 1}
