"""What every dataset of photos on disk shares: building a split's index once, with checks.

A subclass only says which (image id, file, raw captions) a split has (`entries`); this class
normalises the captions, checks every file in parallel (remembered between runs,
`images.scan`), leaves out what cannot be used, counted by reason and logged with the first
few file names, and returns a `CaptionSplit` whose images are read by tf.data when used. A
split with nothing usable is a clear error naming the annotations and the image folder.
"""

import collections
import os

import numpy as np

from captioning.data import annotations as annotations_lib
from captioning.data import datasets
from captioning.data import images
from captioning.data import tokenizer as tokenizer_lib


class PhotoDataset(datasets.Dataset):
  """A dataset of image files with captions.

  Args:
    image_size: the side every image is resized to.
    seed: the experiment seed.
    resize: "crop" (scale the shorter side, cut the centre) or "pad" (scale the longer side,
      centre on black).
    cache_dir: where file checks (and exported TFDS images) are remembered between runs.
  """

  def __init__(self, *, image_size, seed, resize="crop", cache_dir="~/.cache/captioning"):
    super().__init__(image_size=image_size, seed=seed)
    if resize not in images.RESIZE_MODES:
      raise ValueError(f"resize must be one of {images.RESIZE_MODES}, got {resize!r}")
    self.resize = resize
    self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None

  @property
  def resize_mode(self):
    return self.resize

  def entries(self, split):
    """[(image_id, file path, [raw captions])] of a split, as the annotations list them."""
    raise NotImplementedError

  def describe(self, split):
    """Where a split comes from, for messages."""
    return f"{type(self).__name__} split {split!r}"

  def load(self, split):
    entries = self.entries(split)
    where = self.describe(split)
    if not entries:
      raise annotations_lib.AnnotationsError(f"{where} has no images.")
    twice = [i for i, n in collections.Counter(i for i, _, _ in entries).items() if n > 1]
    if twice:
      raise annotations_lib.AnnotationsError(
        f"{where} lists image ids more than once, e.g. {twice[:5]}."
      )
    skipped = {reason: [] for reason in images.SKIP_REASONS}
    usable = []
    for image_id, path, raw in entries:
      captions = [c for c in map(tokenizer_lib.normalize_caption, raw) if c]
      if captions:
        usable.append((image_id, path, captions))
      else:
        skipped[images.NO_CAPTION].append(path)
    reasons = images.scan([path for _, path, _ in usable], self.cache_dir)
    kept = []
    for entry, reason in zip(usable, reasons):
      if reason:
        skipped[reason].append(entry[1])
      else:
        kept.append(entry)
    summary = images.summarize_skips(skipped, where)
    if not kept:
      counts = {reason: entry["count"] for reason, entry in summary.items()}
      example = usable[0][1] if usable else entries[0][1]
      raise annotations_lib.AnnotationsError(
        f"{where}: none of its {len(entries)} images can be used ({counts}); is the image folder "
        f"right? e.g. {example}"
      )
    return datasets.CaptionSplit(
      split,
      self.image_files([path for _, path, _ in kept]),
      np.asarray([image_id for image_id, _, _ in kept], dtype=np.int64),
      [captions for _, _, captions in kept],
      skipped=summary,
    )
