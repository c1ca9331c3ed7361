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
  windows of `bucket_window` batches, pairs are grouped by length so a batch holds captions of
  similar length, and each batch is cut to its longest caption rounded up to a multiple of
  `length_multiple` tokens. The decoder unrolls over that many steps instead of the global
  maximum (captions of 1-object scenes are a third as long as those of 3-object scenes); the
  few distinct lengths mean few retraces of the train step. The batch order is shuffled again so
  lengths do not cycle. The last partial batch of each epoch is dropped.

  Args:
    split: a CaptionSplit.
    tokens: `encode_captions(split, ...)`, int32 [N, K, T].
    batch_size: examples per batch.
    seed: shuffling seed.
    length_multiple: batch lengths are multiples of this; 0 keeps the full length T.
    bucket_window: how many batches' worth of pairs are grouped by length at a time.
  """

  def __init__(self, split, tokens, batch_size, seed, length_multiple=8, bucket_window=32):
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
    if self.num_pairs < batch_size:
      raise ValueError(f"batch_size {batch_size} exceeds the {self.num_pairs} training pairs")
    self.batches_per_epoch = self.num_pairs // batch_size
    # Tokens up to and including <end> (the first pad, id 0, follows it).
    self.lengths = (tokens != 0).sum(-1).reshape(-1)  # [N*K]
    self._epoch, self._plan = None, None

  def _epoch_plan(self, epoch):
    """[batches_per_epoch, batch_size] pair indices of an epoch (cached for the current one)."""
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, epoch])
      order = rng.permutation(self.num_pairs)[:self.batches_per_epoch * self.batch_size]
      if self.length_multiple:
        window = self.bucket_window * self.batch_size
        for start in range(0, len(order), window):
          chunk = order[start:start + window]
          order[start:start + window] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
      plan = order.reshape(self.batches_per_epoch, self.batch_size)
      self._plan, self._epoch = plan[rng.permutation(self.batches_per_epoch)], epoch
    return self._plan

  def batch(self, step):
    """The batch of training step `step` as a dict of numpy arrays."""
    epoch, index = divmod(int(step), self.batches_per_epoch)
    pairs = self._epoch_plan(epoch)[index]
    image_index, caption_index = np.divmod(pairs, self.tokens.shape[1])
    tokens = self.tokens[image_index, caption_index]
    if self.length_multiple:
      longest = int(self.lengths[pairs].max())
      keep = min(-(-longest // self.length_multiple) * self.length_multiple, tokens.shape[1])
      tokens = tokens[:, :keep]
    return {"image": self.images[image_index], "tokens": tokens,
            "image_id": self.image_ids[image_index]}

  def dataset(self, start_step=0):
    """An infinite tf.data.Dataset of batches from `start_step` on, prefetched."""
    image_shape = (self.batch_size,) + self.images.shape[1:]
    signature = {
        "image": tf.TensorSpec(image_shape, tf.uint8),
        "tokens": tf.TensorSpec((self.batch_size, None), tf.int32),
        "image_id": tf.TensorSpec((self.batch_size,), tf.int64),
    }

    def generate():
      step = start_step
      while True:
        yield self.batch(step)
        step += 1

    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)


def image_batches(split, batch_size):
  """Yields {"image", "image_id", "index"} numpy batches over a split, in order, once."""
  for start in range(0, len(split), batch_size):
    stop = min(start + batch_size, len(split))
    yield {"image": split.images[start:stop], "image_id": split.image_ids[start:stop],
           "index": np.arange(start, stop)}


def caption_batches(split, tokens, batch_size):
  """Yields teacher-forcing batches over every (image, caption) pair of a split, once."""
  n, k = tokens.shape[:2]
  image_index = np.repeat(np.arange(n), k)
  caption_index = np.tile(np.arange(k), n)
  for start in range(0, n * k, batch_size):
    sel = slice(start, start + batch_size)
    yield {"image": split.images[image_index[sel]],
           "tokens": tokens[image_index[sel], caption_index[sel]]}
