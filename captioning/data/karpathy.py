"""`karpathy_json`: the Karpathy & Fei-Fei splits of Flickr8k, Flickr30k and COCO.

One annotations file per dataset (`dataset_flickr8k.json`, `dataset_flickr30k.json`,
`dataset_coco.json`) lists every image with its split and captions:

    {"images": [{"filename": "...jpg", "filepath": "val2014",  # COCO only
                 "split": "train" | "restval" | "val" | "test",
                 "imgid": 0, "cocoid": 391895,                    # cocoid: COCO only
                 "sentences": [{"raw": "A man riding a horse."}, ...]}, ...]}

Images are read from `image_root/filepath/filename` (`image_root/filename` without a filepath).
Image ids are COCO's ids where the file has them (so results files match COCO's annotations),
else `imgid`. `restval` (COCO's extra 30k training images) joins `train` when `use_restval`.
"""

import os

from captioning.data import annotations as annotations_lib
from captioning.data import photos


class KarpathyDataset(photos.PhotoDataset):
  """A Karpathy-split annotations file and its image folder.

  Args:
    annotations: the JSON file.
    image_root: the folder the file's `filepath`/`filename` entries are relative to.
    use_restval: train on `restval` too (COCO).
    image_size, seed, resize, cache_dir: see `photos.PhotoDataset`.
  """

  SPLITS = ("train", "val", "test")

  def __init__(
    self,
    *,
    image_size,
    seed,
    annotations,
    image_root,
    use_restval=True,
    resize="crop",
    cache_dir="~/.cache/captioning",
  ):
    super().__init__(image_size=image_size, seed=seed, resize=resize, cache_dir=cache_dir)
    if not image_root:
      raise annotations_lib.AnnotationsError(
        "config.data.image_root is empty: pass --config.data.image_root=DIR."
      )
    self.annotations = annotations
    self.image_root = os.path.expanduser(image_root)
    self.use_restval = use_restval
    self._by_split = None

  def describe(self, split):
    return f"karpathy_json {split!r} ({self.annotations}, images under {self.image_root})"

  def _read(self):
    """{split: [(image_id, path, raw captions)]}, from the annotations file, read once."""
    data = annotations_lib.read_json(self.annotations, "config.data.annotations")
    by_split = {}
    for image_id, split, file, raw in annotations_lib.karpathy_images(data, self.annotations):
      if split == "restval":
        if not self.use_restval:
          continue
        split = "train"
      by_split.setdefault(split, []).append((image_id, os.path.join(self.image_root, file), raw))
    return by_split

  def entries(self, split):
    if self._by_split is None:
      self._by_split = self._read()
    return self._by_split.get(split, [])
