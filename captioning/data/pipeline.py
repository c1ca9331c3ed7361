"""tf.data input pipelines: teacher-forcing batches for training, image batches for decoding.

The training stream is a pure function of (seed, step): batch `s` holds the (image, caption)
pairs at positions s*B .. s*B+B-1 of a sequence of per-epoch permutations. Resuming from a
checkpoint therefore needs only the step counter to continue exactly where training stopped,
without saving a shuffle buffer.
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
  """A deterministic, resumable stream of teacher-forcing batches.

  Args:
    split: a CaptionSplit.
    tokens: `encode_captions(split, ...)`, int32 [N, K, T+1].
    batch_size: examples per batch.
    seed: shuffling seed.
  """

  def __init__(self, split, tokens, batch_size, seed):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.images = split.images
    self.image_ids = split.image_ids
    self.tokens = tokens
    self.batch_size = batch_size
    self.seed = seed
    self.num_pairs = tokens.shape[0] * tokens.shape[1]
    self._epoch, self._order = None, None

  def _permutation(self, epoch):
    if epoch != self._epoch:
      self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
      self._epoch = epoch
    return self._order

  def batch(self, step):
    """The batch of training step `step` as a dict of numpy arrays."""
    positions = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
    pairs = np.empty_like(positions)
    for epoch in np.unique(positions // self.num_pairs):
      sel = positions // self.num_pairs == epoch
      pairs[sel] = self._permutation(int(epoch))[positions[sel] % self.num_pairs]
    image_index, caption_index = np.divmod(pairs, self.tokens.shape[1])
    return {"image": self.images[image_index],
            "tokens": self.tokens[image_index, caption_index],
            "image_id": self.image_ids[image_index]}

  def dataset(self, start_step=0):
    """An infinite tf.data.Dataset of batches from `start_step` on, prefetched."""
    image_shape = (self.batch_size,) + self.images.shape[1:]
    signature = {
        "image": tf.TensorSpec(image_shape, tf.uint8),
        "tokens": tf.TensorSpec((self.batch_size, self.tokens.shape[-1]), tf.int32),
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
