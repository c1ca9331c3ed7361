"""tf.data input pipelines: teacher-forcing batches for training, image batches for decoding.

The training stream is a pure function of (seed, step): batch `s` is batch `s mod E` of epoch
`s div E` (E batches per epoch), and each epoch's batches are fixed by (seed, epoch). Resuming
from a checkpoint therefore needs only the step counter to continue exactly where training
stopped, without saving a shuffle buffer.
"""

import numpy as np
import tensorflow as tf


def encode_captions(split, tokenizer, max_length):
  """Tokenizes every reference caption of `split`.

  Returns:
    int32 [N, K, max_length + 2] where K is the largest number of captions of an image; images
    with fewer captions repeat their last one so every slot holds a real caption.
  """
  if not len(split):
    raise ValueError(f"Split {split.name!r} is empty.")
  k = max(len(c) for c in split.captions)
  if k == 0:
    raise ValueError(f"Split {split.name!r} has no captions.")
  out = np.zeros([len(split), k, max_length + 2], np.int32)
  for i, caps in enumerate(split.captions):
    if not caps:
      raise ValueError(f"Image {split.image_ids[i]} of split {split.name!r} has no captions.")
    caps = list(caps) + [caps[-1]] * (k - len(caps))
    out[i] = tokenizer.encode_batch(caps, max_length)
  return out


class TrainStream:
  """A deterministic, resumable stream of teacher-forcing batches, bucketed by caption length.

  Each epoch is a permutation of all (image, caption) pairs seeded by (seed, epoch). Within
  windows of `bucket_window` batches, pairs are grouped into length buckets of
  `length_multiple` tokens, so a batch holds captions of similar length, and each batch is cut
  to its longest caption rounded up to a multiple of `length_multiple` tokens. The decoder
  unrolls over that many steps instead of the global maximum (captions of 1-object scenes are a
  third as long as those of 3-object scenes); the few distinct lengths mean few retraces of the
  train step. The batch order is shuffled again so lengths do not cycle. The last partial batch
  of each epoch is dropped.

  Within a bucket the pairs stay in random order. Sorting them by exact length instead would
  give batches of one caption length, and on `shapes` a length often means one template and
  one kind of relation phrase (every 9-word 2-object caption says "above", "over", "below" or
  "under"), so each batch would pull the word statistics its own way.

  With a curriculum (`curriculum_steps` > 0), the first `curriculum_steps` steps draw only from
  the pairs that `curriculum_pairs` marks (chosen by the dataset from `config.curriculum`: by
  caption length, and on `shapes` by number of objects), in epochs of their own; the steps after
  that draw from every pair, exactly as a stream without curriculum does from its step 0 (Bengio
  et al. 2009; "baby steps", Spitkovsky et al. 2010). docs/results.md has what each curriculum
  did.

  Args:
    split: a CaptionSplit.
    tokens: `encode_captions(split, ...)`, int32 [N, K, T].
    batch_size: examples per batch.
    seed: shuffling seed.
    length_multiple: batch lengths are multiples of this; 0 keeps the full length T.
    bucket_window: how many batches' worth of pairs are grouped by length at a time.
    curriculum_steps: how many first steps train on the curriculum's pairs only; 0 for none.
    curriculum_pairs: bool [N, K], the pairs of the curriculum (needed when curriculum_steps > 0).
  """

  def __init__(
    self,
    split,
    tokens,
    batch_size,
    seed,
    length_multiple=8,
    bucket_window=32,
    curriculum_steps=0,
    curriculum_pairs=None,
  ):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.images = split.images
    self.image_ids = split.image_ids
    self.tokens = tokens
    self.batch_size = batch_size
    self.seed = seed
    self.length_multiple = length_multiple
    self.bucket_window = max(1, bucket_window)
    self.num_pairs = tokens.shape[0] * tokens.shape[1]
    # Tokens up to and including <end> (the first pad, id 0, follows it).
    self.lengths = (tokens != 0).sum(-1).reshape(-1)  # [N*K]
    self.curriculum_steps = int(curriculum_steps)
    # Each stage: the pairs it draws from. Stage 0 is the curriculum, if any.
    self._stage_pairs = [np.arange(self.num_pairs)]
    if self.curriculum_steps > 0:
      if curriculum_pairs is None or np.shape(curriculum_pairs) != tokens.shape[:2]:
        raise ValueError(f"curriculum_pairs must be a bool array of shape {tokens.shape[:2]}")
      chosen = np.flatnonzero(np.asarray(curriculum_pairs).reshape(-1))
      if len(chosen) < batch_size:
        raise ValueError(
          f"Only {len(chosen)} training captions fit the curriculum (config.curriculum), "
          f"fewer than one batch of {batch_size}"
        )
      self._stage_pairs.insert(0, chosen)
    if self.num_pairs < batch_size:
      raise ValueError(f"batch_size {batch_size} exceeds the {self.num_pairs} training pairs")
    self.batches_per_epoch = self.num_pairs // batch_size
    self._plan_key, self._plan = None, None

  def _epoch_plan(self, stage, epoch):
    """[batches, batch_size] pair indices of an epoch of a stage (cached for the current one)."""
    if (stage, epoch) != self._plan_key:
      pairs = self._stage_pairs[stage]
      # The last stage keeps the seeding of a stream without curriculum.
      last = stage == len(self._stage_pairs) - 1
      rng = np.random.default_rng([self.seed, epoch] if last else [self.seed, epoch, stage, 1])
      num_batches = len(pairs) // self.batch_size
      order = pairs[rng.permutation(len(pairs))[: num_batches * self.batch_size]]
      if self.length_multiple:
        window = self.bucket_window * self.batch_size
        for start in range(0, len(order), window):
          chunk = order[start : start + window]
          buckets = -(-self.lengths[chunk] // self.length_multiple)
          order[start : start + window] = chunk[np.argsort(buckets, kind="stable")]
      plan = order.reshape(num_batches, self.batch_size)
      self._plan, self._plan_key = plan[rng.permutation(num_batches)], (stage, epoch)
    return self._plan

  def pairs(self, step):
    """int64 [batch_size]: the (image, caption) pairs of training step `step`, as flat indices
    image * K + caption."""
    step, stage = int(step), 0
    if len(self._stage_pairs) > 1 and step >= self.curriculum_steps:  # past the curriculum
      stage, step = 1, step - self.curriculum_steps
    num_batches = len(self._stage_pairs[stage]) // self.batch_size
    epoch, index = divmod(step, num_batches)
    return self._epoch_plan(stage, epoch)[index].astype(np.int64)

  def _cut_length(self, longest):
    """Tokens kept of a batch whose longest caption has `longest` tokens (with <end>)."""
    if not self.length_multiple:
      return self.tokens.shape[2]
    return min(-(-longest // self.length_multiple) * self.length_multiple, self.tokens.shape[2])

  def batch(self, step):
    """The batch of training step `step` as numpy arrays: the reference `dataset` must match
    (it reads images the same way, for file-backed splits by decoding them now)."""
    pairs = self.pairs(step)
    image_index, caption_index = np.divmod(pairs, self.tokens.shape[1])
    keep = self._cut_length(int(self.lengths[pairs].max()))
    return {
      self.images.key: self.images.numpy(image_index),
      "tokens": self.tokens[image_index, caption_index][:, :keep],
      "image_id": self.image_ids[image_index],
    }

  def _steps_pairs(self, steps):
    return np.stack([self.pairs(s) for s in steps])  # [len(steps), batch_size]

  def dataset(self, start_step=0, num_parts=1, parts=None):
    """An infinite tf.data.Dataset of the batches of steps `start_step`, `start_step + 1`, ...

    With `num_parts` > 1, each step's batch is cut into that many equal slices and the dataset
    yields, step after step, the slices listed in `parts` (all by default), each a batch of its
    own: what the replicas of one worker read under a tf.distribute strategy.

    The plan (which pairs each step trains on) comes from numpy, a chunk of steps at a time;
    reading, decoding and resizing images and gathering captions run in tf.data, in parallel
    and in a fixed order, then batches are cut to their length bucket and prefetched.
    """
    k, full_length = self.tokens.shape[1], self.tokens.shape[2]
    tokens = tf.constant(self.tokens.reshape(-1, full_length))  # [N*K, T]
    image_ids = tf.constant(self.image_ids, tf.int64)
    load_image = self.images.loader()
    chunk = 64  # steps planned per call into numpy

    def plan(steps):
      pairs = tf.numpy_function(self._steps_pairs, [steps], tf.int64)
      return tf.reshape(pairs, [-1, self.batch_size])

    def example(pair):  # one pair, or a batch of them for per-batch sources
      image_index = pair // k
      return {
        self.images.key: load_image(image_index),
        "tokens": tf.gather(tokens, pair),
        "image_id": tf.gather(image_ids, image_index),
      }

    def with_length(pairs):  # [B] pairs -> (pairs, the tokens the whole step's batch keeps)
      caption_tokens = tf.reduce_sum(tf.cast(tf.gather(tokens, pairs) != 0, tf.int32), axis=1)
      keep = full_length
      if self.length_multiple:
        m = self.length_multiple
        keep = tf.minimum((tf.reduce_max(caption_tokens) + m - 1) // m * m, full_length)
      return pairs, keep

    def cut(batch, keep):  # every part of a step keeps the same length: one shape per bucket
      keep = keep if keep.shape.rank == 0 else keep[0]  # per-example sources batched it
      return {**batch, "tokens": batch["tokens"][:, :keep]}

    steps = (
      tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
      .batch(chunk)
      .map(plan)
      .unbatch()  # [batch_size] pairs per step
      .map(with_length)
    )
    parts = list(range(num_parts) if parts is None else parts)
    if self.batch_size % num_parts or not parts or not 0 <= min(parts) <= max(parts) < num_parts:
      raise ValueError(f"Cannot read parts {parts} of {num_parts} of a batch of {self.batch_size}")
    size = self.batch_size // num_parts
    if num_parts > 1:  # [size] pairs per part, the parts of a step one after another
      steps = steps.map(
        lambda pairs, keep: (
          tf.gather(tf.reshape(pairs, [num_parts, size]), parts),
          tf.fill([len(parts)], keep),
        )
      ).unbatch()
    if self.images.per_batch:
      batches = steps.map(
        lambda pairs, keep: (example(pairs), keep),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
      )
    else:
      batches = (
        steps.map(lambda pairs, keep: (pairs, tf.fill([size], keep)))
        .unbatch()  # one pair per element
        .map(
          lambda pair, keep: (example(pair), keep),
          num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=True,
        )
        .batch(size, drop_remainder=True)
      )
    return batches.map(cut).prefetch(tf.data.AUTOTUNE)


def _ordered(count, element, batch_size, per_batch, start=0):
  """Elements start..count-1 in order, mapped in parallel (a batch at a time for per-batch
  sources) and batched; the last batch may be short."""
  indices = tf.data.Dataset.range(start, count)
  if per_batch:
    batches = indices.batch(batch_size).map(
      element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
  else:
    batches = indices.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
      batch_size
    )
  return batches.prefetch(tf.data.AUTOTUNE)


def image_batches(split, batch_size, start=0):
  """A tf.data.Dataset of {"image" (or "features"), "image_id", "index"} batches over a split,
  in order, once (from image `start` on)."""
  load_image = split.images.loader()
  image_ids = tf.constant(split.image_ids, tf.int64)
  return _ordered(
    len(split),
    lambda i: {split.images.key: load_image(i), "image_id": tf.gather(image_ids, i), "index": i},
    batch_size,
    split.images.per_batch,
    start,
  )


def caption_batches(split, tokens, batch_size):
  """A tf.data.Dataset of teacher-forcing batches over every (image, caption) pair, once."""
  k = tokens.shape[1]
  flat = tf.constant(tokens.reshape(-1, tokens.shape[2]))
  load_image = split.images.loader()
  return _ordered(
    tokens.shape[0] * k,
    lambda pair: {split.images.key: load_image(pair // k), "tokens": tf.gather(flat, pair)},
    batch_size,
    split.images.per_batch,
  )
