"""`tfds`: a TFDS image-caption dataset (coco_captions, mocked: nothing is downloaded),
exported once to image files and indexed like any folder of photos."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from captioning.data import tfds_captions
import helpers

SPLIT_IDS = helpers.TFDS_SPLIT_IDS


def make(cache_dir):
  return tfds_captions.TfdsDataset(
    image_size=32,
    seed=0,
    split_names={"train": "train", "val": "val", "test": "test"},
    cache_dir=str(cache_dir),
    data_dir=str(cache_dir / "tfds_data"),
  )


def test_splits_are_exported_once_and_read_as_files(tmp_path):
  calls = []
  with tfds.testing.mock_data(as_dataset_fn=helpers.tfds_as_dataset(calls)):
    dataset = make(tmp_path)
    train = dataset.split("train")
    assert train.image_ids.tolist() == list(SPLIT_IDS["train"])
    assert train.captions[0] == ["a photo of item 100", "item 100 again", "100"]  # empty ones gone
    assert train.images.numpy([0]).shape == (1, 32, 32, 3)
    assert dataset.split("val").image_ids.tolist() == list(SPLIT_IDS["val"])
    assert calls == ["train", "val"]
    # A second run reads the export: TFDS is not asked again.
    again = make(tmp_path).split("train")
    np.testing.assert_array_equal(again.image_ids, train.image_ids)
    assert calls == ["train", "val"]
  assert dataset.splits == ("train", "val", "test")


def test_feature_keys_are_checked():
  with pytest.raises(KeyError, match="no feature 'caption'"):
    tfds_captions.feature({"captions": {"text": []}, "image": b""}, "caption")
  assert tfds_captions.feature({"captions": {"text": [b"x"]}}, "captions/text") == [b"x"]
  assert tfds_captions.feature({"image/id": 3, "image": b""}, "image/id") == 3
  with pytest.raises(ValueError, match="split_names needs 'val'"):
    tfds_captions.TfdsDataset(image_size=32, seed=0, split_names={"train": "train"})
