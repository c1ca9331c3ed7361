"""`tfds`: any TensorFlow Datasets image-caption dataset by name, `coco_captions` first.

TFDS reads its records in order only, while the training stream needs any example by index to
stay a pure function of (seed, step). So each split is streamed once through tf.data and its
encoded images are written, as they are, to `cache_dir/tfds/NAME/SPLIT/` with an index of ids
and captions; from then on the split is a folder of image files like any other (checked,
remembered, read by tf.data). The export costs the disk space of the images once.

Feature keys come from the config: `image_key`, `captions_key` and `id_key` name a feature,
or a nested one with "/" (`coco_captions`: "image", "captions/text", "image/id").
"""

import json
import os

from absl import logging
import numpy as np

from captioning import files
from captioning.data import photos


def feature(example, key):
  """example[key], where a key not found as such is a path into nested features ("a/b")."""
  if key in example:
    return example[key]
  head, _, rest = key.partition("/")
  if rest and isinstance(example.get(head), dict):
    return feature(example[head], rest)
  raise KeyError(f"The TFDS examples have no feature {key!r}; they have {sorted(example)}.")


def _extension(data):
  for magic, ext in ((b"\xff\xd8", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp")):
    if data.startswith(magic):
      return ext
  return "img"


class TfdsDataset(photos.PhotoDataset):
  """A TFDS image-caption dataset.

  Args:
    tfds_name: the TFDS name, e.g. "coco_captions".
    split_names: {our split: TFDS split}, e.g. {"train": "train+restval", "val": "val"};
      `train` and `val` are required.
    image_key, captions_key, id_key: the features holding the image, the captions (a sequence
      of strings) and the image id.
    data_dir: TFDS's data folder; None for its default (~/tensorflow_datasets).
    image_size, seed, resize, cache_dir: see `photos.PhotoDataset` (`cache_dir` also holds the
      exported images).
  """

  def __init__(
    self,
    *,
    image_size,
    seed,
    tfds_name="coco_captions",
    split_names=(("train", "train+restval"), ("val", "val"), ("test", "test")),
    image_key="image",
    captions_key="captions/text",
    id_key="image/id",
    data_dir=None,
    resize="crop",
    cache_dir="~/.cache/captioning",
  ):
    super().__init__(image_size=image_size, seed=seed, resize=resize, cache_dir=cache_dir)
    split_names = dict(split_names)
    for required in ("train", "val"):
      if required not in split_names:
        raise ValueError(f"split_names needs {required!r}, got {sorted(split_names)}")
    if not self.cache_dir:
      raise ValueError("the tfds dataset exports images to cache_dir, which is empty")
    self.tfds_name, self.split_names = tfds_name, split_names
    self.keys = {"image": image_key, "captions": captions_key, "id": id_key}
    self.data_dir = data_dir
    self.splits = ("train", "val", *sorted(set(split_names) - {"train", "val"}))

  def describe(self, split):
    return f"tfds {self.tfds_name} {self.split_names[split]!r}"

  def _folder(self, split):
    return os.path.join(self.cache_dir, "tfds", self.tfds_name, split)

  def entries(self, split):
    folder = self._folder(split)
    index_path = os.path.join(folder, "index.json")
    if os.path.exists(index_path):
      with open(index_path) as f:
        index = json.load(f)
      if index["tfds_split"] == self.split_names[split] and index["keys"] == self.keys:
        return [(i, os.path.join(folder, name), caps) for i, name, caps in index["entries"]]
    return self._export(split, folder, index_path)

  def _export(self, split, folder, index_path):
    """Streams a split once, writing its encoded images and an index; returns the entries."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    tfds_split = self.split_names[split]
    logging.info("Exporting %s %s to %s (once).", self.tfds_name, tfds_split, folder)
    dataset = tfds.load(
      self.tfds_name,
      split=tfds_split,
      data_dir=self.data_dir,
      shuffle_files=False,
      decoders={self.keys["image"]: tfds.decode.SkipDecoding()},
    )
    os.makedirs(folder, exist_ok=True)
    entries = []
    for example in dataset.as_numpy_iterator():
      image_id = int(feature(example, self.keys["id"]))
      image = feature(example, self.keys["image"])
      if isinstance(image, np.ndarray) and image.dtype == np.uint8:  # decoded after all
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        image = tf.io.encode_png(image).numpy()
      name = f"{image_id}.{_extension(image)}"
      with open(os.path.join(folder, name), "wb") as f:
        f.write(image)
      captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c)
                  for c in np.atleast_1d(feature(example, self.keys["captions"]))]  # fmt: skip
      entries.append((image_id, name, captions))
    index = {"tfds_split": tfds_split, "keys": self.keys, "entries": entries}
    files.write_json(index_path, index, indent=None)
    return [(i, os.path.join(folder, name), caps) for i, name, caps in entries]
