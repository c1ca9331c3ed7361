"""`coco_json`: COCO caption annotation files, one per split, and their image folders.

    {"images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg", ...}, ...],
     "annotations": [{"image_id": 391895, "caption": "A man riding a horse."}, ...]}

`config.data.annotations` and `config.data.image_root` map each split name to its file and
folder (`--config.data.annotations.train=captions_train2014.json`). The splits are the map's
keys; it must have `train` and `val` (the split evaluated during training); any others (e.g.
`test`, a held-out part of val2014) can be scored by `scripts/evaluate.py`, and one left empty
is not used.
"""

import os

from captioning.data import annotations as annotations_lib
from captioning.data import photos


class CocoDataset(photos.PhotoDataset):
  """COCO-format caption annotations.

  Args:
    annotations: {split: annotations file}.
    image_root: {split: image folder}.
    image_size, seed, resize, cache_dir: see `photos.PhotoDataset`.
  """

  def __init__(
    self,
    *,
    image_size,
    seed,
    annotations,
    image_root,
    resize="crop",
    cache_dir="~/.cache/captioning",
  ):
    super().__init__(image_size=image_size, seed=seed, resize=resize, cache_dir=cache_dir)
    # A split left empty (e.g. `test` in configs/coco_sat.py, for a file of one's own) is unused.
    annotations = {k: v for k, v in dict(annotations).items() if v or k in ("train", "val")}
    image_root = {k: v for k, v in dict(image_root).items() if k in annotations}
    for required in ("train", "val"):
      if required not in annotations:
        raise annotations_lib.AnnotationsError(
          f"config.data.annotations has no {required!r}: coco_json needs a file per split, "
          f"e.g. --config.data.annotations.{required}=captions_{required}2014.json"
        )
    if set(image_root) != set(annotations):
      raise annotations_lib.AnnotationsError(
        f"config.data.image_root must name a folder for each split of config.data.annotations "
        f"({sorted(annotations)}), got {sorted(image_root)}"
      )
    self.annotations = annotations
    self.image_root = {k: os.path.expanduser(v) for k, v in image_root.items()}
    self.splits = ("train", "val", *sorted(set(annotations) - {"train", "val"}))

  def describe(self, split):
    return f"coco_json {split!r} ({self.annotations[split]}, images under {self.image_root[split]})"

  def entries(self, split):
    what = f"config.data.annotations.{split}"
    path = self.annotations[split]
    data = annotations_lib.read_json(path, what)
    annotations_lib.require(
      isinstance(data, dict) and isinstance(data.get("images"), list),
      path,
      'expected {"images": [...], "annotations": [...]} (COCO caption annotations)',
    )
    captions = annotations_lib.coco_captions(data, path)
    if not self.image_root[split]:
      raise annotations_lib.AnnotationsError(
        f"config.data.image_root.{split} is empty: pass --config.data.image_root.{split}=DIR."
      )
    entries = []
    for n, image in enumerate(data["images"]):
      annotations_lib.require(
        isinstance(image, dict) and "id" in image and "file_name" in image,
        path,
        f"images[{n}] needs 'id' and 'file_name'",
      )
      image_id = int(image["id"])
      file = os.path.join(self.image_root[split], image["file_name"])
      entries.append((image_id, file, captions.get(image_id, [])))
    return entries
