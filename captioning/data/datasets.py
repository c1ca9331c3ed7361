"""Captioning datasets chosen by `config.data.name`, loaded as in-memory splits.

Every dataset yields the same `CaptionSplit`, so the input pipeline, training and evaluation do
not care where the images came from.
"""

import dataclasses
from typing import Any

import numpy as np

from captioning.data import shapes

SPLITS = ("train", "val", "test", "compositional")


@dataclasses.dataclass(frozen=True)
class CaptionSplit:
  """One split of a captioning dataset.

  Attributes:
    name: the split name.
    images: uint8 [N, S, S, 3].
    image_ids: int64 [N], unique within the dataset.
    captions: N lists of reference captions.
    scenes: per-image ground truth for fact checking (`shapes` only), else None.
  """

  name: str
  images: np.ndarray
  image_ids: np.ndarray
  captions: list
  scenes: list | None = None

  def __len__(self):
    return len(self.image_ids)

  def references(self):
    """{image_id: [reference captions]}, the form the caption metrics take."""
    return {int(i): list(c) for i, c in zip(self.image_ids, self.captions)}

  def scene_by_id(self) -> dict[int, Any]:
    if self.scenes is None:
      return {}
    return {int(i): s for i, s in zip(self.image_ids, self.scenes)}

  def take(self, n):
    """The first `n` images of the split (all of them when n is None or too large)."""
    n = len(self) if n is None else min(int(n), len(self))
    return dataclasses.replace(
      self,
      images=self.images[:n],
      image_ids=self.image_ids[:n],
      captions=self.captions[:n],
      scenes=None if self.scenes is None else self.scenes[:n],
    )


def _load_shapes(data_config, split, seed):
  sizes = {
    "train": data_config.num_train,
    "val": data_config.num_val,
    "test": data_config.num_test,
    "compositional": data_config.num_compositional,
  }
  generated = shapes.generate_split(
    split,
    sizes[split],
    seed=seed,
    image_size=data_config.image_size,
    min_objects=data_config.min_objects,
    max_objects=data_config.max_objects,
    held_out_pairs=tuple(tuple(p) for p in data_config.held_out_pairs),
  )
  return CaptionSplit(
    split,
    generated.images,
    generated.image_ids.astype(np.int64),
    generated.captions,
    list(generated.scenes),
  )


_LOADERS = {"shapes": _load_shapes}


def load_split(data_config, split, *, seed=0):
  """Loads `split` of the dataset named by `data_config.name`.

  Args:
    data_config: the `data` section of a config.
    split: one of SPLITS.
    seed: the experiment seed (`shapes` derives its images from it).

  Returns:
    A CaptionSplit.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
  name = data_config.name
  if name not in _LOADERS:
    raise ValueError(f"Unknown dataset {name!r} (config.data.name); available: {sorted(_LOADERS)}")
  return _LOADERS[name](data_config, split, seed)
