"""Captioning datasets chosen by `config.data.name`, each giving splits of the same form.

A dataset owns what only it has: its split names, the evaluators that make sense for it, how it
scores a caption beyond the COCO metrics (fact accuracy on `shapes`) and which training pairs a
curriculum may start from. Generic code (the input pipeline, training, evaluation) asks the
dataset and never branches on which one it is.

Adding a dataset: write its module (a `Dataset` subclass, and a `CaptionSplit` subclass if its
images carry more ground truth), add one line to `DATASETS`, and write a config.
"""

import dataclasses

import numpy as np

from captioning import registry
from captioning.data import images

# The keys of `config.data` that the generic pipeline reads; every other key of the section
# reaches the dataset's constructor.
PIPELINE_KEYS = (
  "name",
  "image_size",
  "max_caption_length",
  "vocab_size",
  "min_count",
  "bucket_length_multiple",
  "features",  # a feature cache (captioning/features.py), or None
)

DATASETS = registry.Registry(
  "config.data.name",
  {
    "shapes": "captioning.data.shapes.dataset:ShapesDataset",
    "karpathy_json": "captioning.data.karpathy:KarpathyDataset",
    "coco_json": "captioning.data.coco:CocoDataset",
    "tfds": "captioning.data.tfds_captions:TfdsDataset",
  },
)


@dataclasses.dataclass(frozen=True)
class CaptionSplit:
  """One split of a captioning dataset: an index of images and their captions.

  The pixels are not held here unless the dataset generates them: `images` is an
  `images.ArrayImages` (in memory) or an `images.FileImages` (paths, read by tf.data when used),
  so memory does not grow with the dataset.

  Attributes:
    name: the split name.
    images: the N images, an `ArrayImages` or `FileImages`.
    image_ids: int64 [N], unique within the dataset.
    captions: N lists of reference captions (normalised).
    skipped: what the index left out, {reason: {"count": n, "examples": [file names]}} (see
      `images.SKIP_REASONS`); empty when nothing was.
  """

  # The fields that hold one entry per image, in order; subclasses add theirs.
  PER_IMAGE = ("images", "image_ids", "captions")

  name: str
  images: object
  image_ids: np.ndarray
  captions: list
  skipped: dict = dataclasses.field(default_factory=dict, kw_only=True)

  def __len__(self):
    return len(self.image_ids)

  def references(self):
    """{image_id: [reference captions]}, the form the caption metrics take."""
    return {int(i): list(c) for i, c in zip(self.image_ids, self.captions)}

  def take(self, n):
    """The first `n` images of the split (all of them when n is None or too large)."""
    n = len(self) if n is None else min(int(n), len(self))
    return dataclasses.replace(self, **{f: getattr(self, f)[:n] for f in self.PER_IMAGE})

  def score_captions(self, predictions):
    """Scores beyond the COCO metrics that this dataset's ground truth allows.

    Args:
      predictions: {image_id: generated caption}.

    Returns:
      A dict of named numbers; empty for datasets with captions as their only ground truth.
    """
    del predictions
    return {}

  def caption_verdicts(self, predictions):
    """Per-image judgements beyond the COCO metrics, for the per-image results file.

    Returns:
      {image_id: {column: value}}; empty for datasets with captions as their only ground truth.
    """
    del predictions
    return {}


class Dataset:
  """A captioning dataset: named splits, and what only this dataset knows.

  Subclasses set `SPLITS` (the first is the training split, the second the one evaluated during
  training; an instance may set its own `splits`) and `EVALUATORS`, take their own settings as
  keyword arguments (the keys of `config.data` beyond `PIPELINE_KEYS`) and implement `load`.

  Args:
    image_size: the side of the square images the pipeline feeds the model.
    seed: the experiment seed.
  """

  SPLITS = ("train", "val", "test")
  # Evaluators (captioning.evaluators) that make sense for this dataset's ground truth.
  EVALUATORS = ("perplexity", "captions")

  def __init__(self, *, image_size, seed):
    self.image_size = int(image_size)
    self.seed = int(seed)
    self.splits = tuple(self.SPLITS)

  @property
  def train_split(self):
    return self.splits[0]

  @property
  def eval_split(self):
    return self.splits[1]

  def split(self, name):
    """Loads split `name` as a CaptionSplit."""
    if name not in self.splits:
      raise ValueError(
        f"Unknown split {name!r} of dataset {type(self).__name__}; it has {list(self.splits)}."
      )
    return self.load(name)

  def load(self, name):
    raise NotImplementedError

  @property
  def resize_mode(self):
    """How an image from outside the dataset is fitted to `image_size` (an
    `images.RESIZE_MODES` entry, see `images.resize`): what `image_files` and an exported
    model's serving signature both use."""
    return "crop"

  def image_files(self, paths):
    """Image files from outside the dataset (a user's photos), read as this dataset's images
    are: an `images.FileImages` at this dataset's image size and `resize_mode`."""
    return images.FileImages(paths, self.image_size, self.resize_mode)

  def curriculum_pairs(self, split, words, *, min_words, max_words):
    """Which (image, caption) pairs a curriculum's first steps train on.

    Args:
      split: the training CaptionSplit.
      words: int [N, K], the number of words of each image's captions.
      min_words, max_words: the caption lengths allowed, in words.

    Returns:
      bool [N, K].
    """
    del split
    if not 0 <= min_words <= max_words:
      raise ValueError(
        f"min_words and max_words must satisfy 0 <= min <= max, got {min_words} and {max_words}"
      )
    return (words >= min_words) & (words <= max_words)


def dataset_section(data_config):
  """The keys of `config.data` that reach the dataset's constructor."""
  return {k: v for k, v in data_config.items() if k not in PIPELINE_KEYS}


def check(data_config):
  """Raises ValueError if `config.data` names no dataset or has keys it does not take."""
  cls = DATASETS.get(data_config["name"])
  registry.check_section(
    cls, dataset_section(data_config), "config.data", provided=("image_size", "seed")
  )
  return cls


def create(data_config, seed):
  """Builds the dataset `config.data` describes.

  Args:
    data_config: the `data` section of a config.
    seed: the experiment seed.

  Returns:
    A `Dataset`.
  """
  return registry.call_with_section(
    check(data_config),
    dataset_section(data_config),
    "config.data",
    image_size=data_config["image_size"],
    seed=seed,
  )
