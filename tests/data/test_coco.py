"""`coco_json`: COCO caption annotations per split, their ids, skips and errors."""

import pytest

from captioning.data import annotations
from captioning.data import coco
import helpers


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  records = helpers.photo_records(str(root))
  files = {}
  for split in ("train", "val", "test"):
    files[split] = str(root / f"captions_{split}.json")
    helpers.write_coco_json(files[split], [r for r in records if r["split"] == split])
  return root, records, files


def make(root, files, **overrides):
  folders = {split: str(root / "images") for split in files}
  return coco.CocoDataset(
    image_size=32, seed=0, annotations=files, image_root=folders, cache_dir=str(root / "cache"),
    **overrides,
  )  # fmt: skip


def test_splits_come_from_the_annotation_map_with_real_ids(fixture):
  root, records, files = fixture
  dataset = make(root, files)
  assert dataset.splits == ("train", "val", "test")
  train = dataset.split("train")
  good = [r["id"] for r in records if r["split"] == "train" and r["kind"] in helpers.GOOD_KINDS]
  assert train.image_ids.tolist() == good
  assert {r: e["count"] for r, e in train.skipped.items()} == dict.fromkeys(
    helpers.BAD_KINDS.values(), 1
  )
  assert all(len(c) == 5 for c in train.captions)
  assert dataset.split("test").image_ids.tolist() == [
    r["id"] for r in records if r["split"] == "test"
  ]


def test_bad_maps_and_files_are_clear_errors(fixture, tmp_path):
  root, _, files = fixture
  with pytest.raises(annotations.AnnotationsError, match=r"annotations has no 'val'"):
    make(root, {"train": files["train"]})
  with pytest.raises(annotations.AnnotationsError, match="must name a folder for each split"):
    coco.CocoDataset(image_size=32, seed=0, annotations=files, image_root={"train": "x"})
  bad = tmp_path / "bad.json"
  bad.write_text('{"images": [], "annotations": [{"caption": "a dog"}]}')
  with pytest.raises(annotations.AnnotationsError, match=r"annotations\[0\] needs 'image_id'"):
    make(root, dict(files, val=str(bad))).split("val")
  bad.write_text('{"images": [{"file_name": "a.jpg"}], "annotations": []}')
  with pytest.raises(annotations.AnnotationsError, match=r"images\[0\] needs 'id' and 'file_name'"):
    make(root, dict(files, val=str(bad))).split("val")
  bad.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}')
  with pytest.raises(annotations.AnnotationsError, match="none of its 1 images can be used"):
    make(root, dict(files, val=str(bad))).split("val")
  twice = tmp_path / "twice.json"
  twice.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],'
                   ' "annotations": []}')  # fmt: skip
  with pytest.raises(annotations.AnnotationsError, match="image ids more than once"):
    make(root, dict(files, val=str(twice))).split("val")
