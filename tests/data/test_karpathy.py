"""`karpathy_json`: splits, ids, captions and what its index leaves out, and its errors."""

import json

import numpy as np
import pytest

from captioning.data import annotations
from captioning.data import datasets
from captioning.data import images
from captioning.data import karpathy
import helpers


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  root = tmp_path_factory.mktemp("flickr")
  records = helpers.photo_records(str(root))
  coco = str(root / "dataset_coco.json")
  helpers.write_karpathy_json(coco, records, coco_style=True)
  flickr = str(root / "dataset_flickr.json")
  helpers.write_karpathy_json(flickr, records)
  return root, records, coco, flickr


def make(root, annotations, **kwargs):
  return karpathy.KarpathyDataset(
    image_size=32, seed=0, annotations=annotations, image_root=str(root / "images"),
    cache_dir=str(root / "cache"), **kwargs,
  )  # fmt: skip


def test_splits_ids_captions_and_skips_by_reason(fixture):
  root, records, coco, _ = fixture
  dataset = make(root, coco)
  train = dataset.split("train")
  good = [r for r in records if r["split"] == "train" and r["kind"] in helpers.GOOD_KINDS]
  assert train.image_ids.tolist() == [r["id"] for r in good]  # COCO ids, in file order
  assert train.image_ids.dtype == np.int64 and len(train) == len(train.captions) == len(good)
  assert isinstance(train.images, images.FileImages)
  # Every bad kind is skipped and counted under its reason, with its file named.
  assert {r: e["count"] for r, e in train.skipped.items()} == dict.fromkeys(
    helpers.BAD_KINDS.values(), 1
  )
  corrupt = next(r for r in records if r["kind"] == "corrupt")
  assert train.skipped["undecodable"]["examples"][0].endswith(corrupt["file"])
  # Captions are normalised: case, punctuation, unicode, whitespace.
  first = dict(zip(train.image_ids.tolist(), train.captions))[good[0]["id"]]
  assert first[0] == f"a {first[4].split()[0]} thing number {good[0]['id']}"
  assert first[2].startswith("cafe scene") and "\t" not in first[1] and "  " not in first[1]
  assert all(c == " ".join(c.split()) and c == c.lower() for caps in train.captions for c in caps)
  val, test = dataset.split("val"), dataset.split("test")
  assert len(val) == len(test) == 4 and not val.skipped
  assert set(val.image_ids) & set(test.image_ids) == set()
  image = train.images.numpy([0])
  assert image.shape == (1, 32, 32, 3) and image.dtype == np.uint8


def test_ids_without_coco_ids_are_imgid_and_restval_joins_train(fixture, tmp_path):
  root, _, _, flickr = fixture
  train = make(root, flickr).split("train")
  assert train.image_ids.tolist()[:3] == [0, 1, 2]
  with open(flickr) as f:
    data = json.load(f)
  data["images"][20]["split"] = "restval"  # a val image
  path = str(tmp_path / "restval.json")
  with open(path, "w") as f:
    json.dump(data, f)
  assert 20 in make(root, path).split("train").image_ids
  assert 20 not in make(root, path, use_restval=False).split("train").image_ids


def test_created_by_name_from_the_data_section(fixture):
  root, _, coco, _ = fixture
  config = dict(name="karpathy_json", annotations=coco, image_root=str(root / "images"),
                image_size=32, max_caption_length=20, vocab_size=100, min_count=1,
                bucket_length_multiple=8, cache_dir=str(root / "cache"))  # fmt: skip
  dataset = datasets.create(config, seed=0)
  assert isinstance(dataset, karpathy.KarpathyDataset) and dataset.splits == (
    "train",
    "val",
    "test",
  )


@pytest.mark.parametrize(
  "content,message",
  [
    ("{not json", "is not valid JSON"),
    ('{"pictures": []}', r'expected \{"images": \[\.\.\.\]\}'),
    ('{"images": [{"filename": "a.jpg", "split": "train", "imgid": 1}]}', "has no 'sentences'"),
    ('{"images": [{"filename": "a.jpg", "split": "train", "sentences": []}]}', "'cocoid' nor"),
    (
      '{"images": [{"filename": "a.jpg", "split": "train", "imgid": 1, "sentences": [{"x": 1}]}]}',
      r"images\[0\]\.sentences\[0\] has no 'raw' text",
    ),
  ],
)
def test_an_unusable_annotations_file_is_a_clear_error(fixture, tmp_path, content, message):
  root = fixture[0]
  path = tmp_path / "bad.json"
  path.write_text(content)
  with pytest.raises(annotations.AnnotationsError, match=message) as error:
    make(root, str(path)).split("train")
  assert str(path) in str(error.value)


def test_missing_files_and_folders_are_clear_errors(fixture, tmp_path):
  root, _, coco, _ = fixture
  with pytest.raises(annotations.AnnotationsError, match="no file at"):
    make(root, str(tmp_path / "nowhere.json")).split("train")
  with pytest.raises(annotations.AnnotationsError, match=r"config\.data\.annotations is empty"):
    make(root, "").split("train")
  with pytest.raises(annotations.AnnotationsError, match=r"config\.data\.image_root is empty"):
    karpathy.KarpathyDataset(image_size=32, seed=0, annotations=coco, image_root="")
  wrong_root = karpathy.KarpathyDataset(
    image_size=32, seed=0, annotations=coco, image_root=str(tmp_path), cache_dir=None
  )
  with pytest.raises(annotations.AnnotationsError, match="none of its 4 images can be used"):
    wrong_root.split("val")


def test_files_from_outside_the_dataset_are_read_as_its_own_images(fixture, tmp_path):
  root, _, coco, _ = fixture
  wide = str(tmp_path / "wide.png")
  helpers.write_image(wide, "wide")
  for resize in ("crop", "pad"):
    dataset = make(root, coco, resize=resize)
    files = dataset.image_files([wide])
    assert dataset.resize_mode == resize  # what an export resizes by too
    assert (files.image_size, files.mode) == (32, resize)
    expected = images.load(wide, 32, resize).numpy()
    np.testing.assert_array_equal(files.numpy([0])[0], expected)
