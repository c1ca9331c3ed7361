"""Images as they come in the wild: checked once when an index is built, decoded and resized by
tf.data in the input pipeline.

`check_file` finds what would break the pipeline (a missing, empty, truncated, unsupported or
undecodable file) with the very decoder the pipeline uses, so a file that passes never fails
later; `scan` runs it over a dataset in parallel and remembers the answers (keyed by each
file's path, size and modification time), so a rerun pays only for files that changed.
`decode` and `resize` run inside tf.data: every image becomes uint8 RGB [S, S, 3], whatever its
format (JPEG, PNG, GIF's first frame, BMP, WebP), colour model (grayscale, CMYK, palette, with
alpha) or shape.
"""

import concurrent.futures
import hashlib
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from captioning import files

# Why an image was left out of an index, in the order they are checked.
MISSING, EMPTY, TRUNCATED, UNSUPPORTED, UNDECODABLE, NO_CAPTION = (
  "missing_file",
  "empty_file",
  "truncated_file",
  "unsupported_format",
  "undecodable",
  "no_usable_caption",
)
SKIP_REASONS = (MISSING, EMPTY, TRUNCATED, UNSUPPORTED, UNDECODABLE, NO_CAPTION)
RESIZE_MODES = ("crop", "pad")


def decode(contents):
  """Encoded image bytes -> uint8 RGB [H, W, 3] (a GIF's first frame; alpha dropped)."""
  image = tf.io.decode_image(contents, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def resize(image, size, mode="crop"):
  """Resizes uint8 [H, W, 3] to [size, size, 3], keeping the aspect ratio.

  Args:
    image: uint8 [H, W, 3].
    size: the output side S.
    mode: "crop" scales the shorter side to S and cuts the centre square; "pad" scales the
      longer side to S and centres the image on black.

  Returns:
    uint8 [S, S, 3].
  """
  if mode not in RESIZE_MODES:
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  side = tf.reduce_min(shape) if mode == "crop" else tf.reduce_max(shape)
  scaled = tf.maximum(tf.cast(tf.round(shape * (size / side)), tf.int32), 1)
  image = tf.image.resize(image, scaled, method="bilinear", antialias=True)
  image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
  return tf.image.resize_with_crop_or_pad(image, size, size)  # centre crop or centre pad


def load(path, size, mode="crop"):
  """Reads, decodes and resizes one image file: uint8 [size, size, 3]."""
  return resize(decode(tf.io.read_file(path)), size, mode)


def _truncated(head, tail):
  """Whether a JPEG or PNG stops before its end marker (decoders may half-decode such files)."""
  if head.startswith(b"\xff\xd8"):  # JPEG: ends with EOI, perhaps followed by padding
    return b"\xff\xd9" not in tail
  if head.startswith(b"\x89PNG"):
    return b"IEND" not in tail
  return False


def _unsupported(head):
  """BMPs below 24 bits per pixel, which TensorFlow's decoder reads as garbage, not an error."""
  if head.startswith(b"BM") and len(head) >= 30:
    return int.from_bytes(head[28:30], "little") < 24
  return False


def check_file(path):
  """Returns why the image file at `path` cannot be used (a SKIP_REASONS entry), or None."""
  if not os.path.isfile(path):
    return MISSING
  size = os.path.getsize(path)
  if size == 0:
    return EMPTY
  with open(path, "rb") as f:
    head = f.read(64)
    f.seek(max(0, size - 64))
    tail = f.read(64)
  if _truncated(head, tail):
    return TRUNCATED
  if _unsupported(head):
    return UNSUPPORTED
  try:
    image = decode(tf.io.read_file(path))
  except (tf.errors.OpError, ValueError):
    return UNDECODABLE
  if min(image.shape[:2]) < 1:
    return UNDECODABLE
  return None


def _stat(path):
  try:
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns]
  except OSError:
    return None


def scan(paths, cache_dir=None, num_workers=None):
  """Checks every file once, in parallel, remembering the answers in `cache_dir`.

  Args:
    paths: image file paths.
    cache_dir: a folder for the remembered answers (one JSON file per folder of images); None
      checks everything every time.
    num_workers: threads (TensorFlow's decoders release the GIL); the CPU count by default.

  Returns:
    A list with, for each path, None (usable) or the SKIP_REASONS entry that rules it out.
  """
  paths = [os.path.abspath(p) for p in paths]
  cache, cache_path = {}, None
  if cache_dir:
    key = hashlib.sha1(os.path.dirname(os.path.commonpath(paths or ["/"]) + "/").encode())
    cache_path = os.path.join(os.path.expanduser(cache_dir), "scans", key.hexdigest() + ".json")
    if os.path.exists(cache_path):
      with open(cache_path) as f:
        cache = json.load(f)
  stats = [_stat(p) for p in paths]
  todo = [i for i, (p, s) in enumerate(zip(paths, stats)) if p not in cache or cache[p][0] != s]
  reasons = [cache[p][1] if p in cache else None for p in paths]
  if todo:
    logging.info("Checking %d of %d image files (the others were checked before).", len(todo),
                 len(paths))  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count()) as pool:
      for i, reason in zip(todo, pool.map(check_file, [paths[i] for i in todo], chunksize=16)):
        reasons[i] = reason
        cache[paths[i]] = [stats[i], reason]
    if cache_path:
      os.makedirs(os.path.dirname(cache_path), exist_ok=True)
      files.write_json(cache_path, cache, indent=None)
  return reasons


def summarize_skips(skipped, where, examples=3):
  """Logs what an index left out, by reason, with the first few file names of each.

  Args:
    skipped: {reason: [file names]}.
    where: what was indexed, for the message (e.g. "karpathy_json train").
    examples: how many file names to keep and show per reason.

  Returns:
    {reason: {"count": n, "examples": [the first file names]}} of the reasons that occurred.
  """
  summary = {
    reason: {"count": len(names), "examples": [str(n) for n in names[:examples]]}
    for reason, names in skipped.items()
    if names
  }
  for reason, entry in summary.items():
    more = ", ..." if entry["count"] > examples else ""
    logging.warning(
      "%s: skipped %d image(s), %s: %s%s",
      where, entry["count"], reason, ", ".join(entry["examples"]), more,
    )  # fmt: skip
  return summary


class ArrayImages:
  """The images of a split held in memory, uint8 [N, S, S, 3] (generated datasets).

  Every image source offers `key` (the batch key the model reads), `per_batch` (whether its
  `loader` takes a batch of indices rather than one), `loader()` for tf.data, `numpy(indices)`
  and `pictures(indices)` (pixels to draw attention over).

  Args:
    array: uint8 [N, S, S, 3].
  """

  key, per_batch = "image", False

  def __init__(self, array):
    self.array = np.asarray(array)
    if self.array.ndim != 4 or self.array.shape[-1] != 3 or self.array.dtype != np.uint8:
      raise ValueError(f"images must be uint8 [N, S, S, 3], got {self.array.dtype} "
                       f"{self.array.shape}")  # fmt: skip

  def __len__(self):
    return len(self.array)

  def __getitem__(self, index):
    """The images at `index` (a slice or index array), as an ArrayImages."""
    return ArrayImages(self.array[index])

  @property
  def image_shape(self):
    return tuple(self.array.shape[1:])

  def numpy(self, indices):
    """uint8 [len(indices), S, S, 3]."""
    return self.array[np.asarray(indices, dtype=np.int64)]

  pictures = numpy

  def loader(self):
    """A function for tf.data: int64 index -> uint8 [S, S, 3]."""
    array = tf.constant(self.array)
    return lambda index: tf.gather(array, index)


class FileImages:
  """The images of a split as files, read, decoded and resized when used.

  Args:
    paths: N file paths.
    image_size: the side S every image is resized to.
    mode: "crop" or "pad" (see `resize`).
  """

  key, per_batch = "image", False

  def __init__(self, paths, image_size, mode="crop"):
    if mode not in RESIZE_MODES:
      raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    self.paths = np.asarray(paths, dtype=object)
    self.image_size, self.mode = int(image_size), mode

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    return FileImages(self.paths[index], self.image_size, self.mode)

  @property
  def image_shape(self):
    return (self.image_size, self.image_size, 3)

  def numpy(self, indices):
    """uint8 [len(indices), S, S, 3], read now (for the few images summaries draw)."""
    images = [load(self.paths[i], self.image_size, self.mode).numpy() for i in indices]
    return np.stack(images) if images else np.zeros((0, *self.image_shape), np.uint8)

  pictures = numpy

  def loader(self):
    """A function for tf.data: int64 index -> uint8 [S, S, 3], read from its file."""
    paths = tf.constant([str(p) for p in self.paths], tf.string)
    return lambda index: load(tf.gather(paths, index), self.image_size, self.mode)
