"""Tests for the procedurally generated shapes dataset."""

import hashlib
import itertools

import numpy as np
import pytest

from captioning.data.shapes import generation
from captioning.data.shapes import scenes

RGB = dict(scenes.COLOR_RGB)
SIZE = 32


@pytest.fixture(scope="module")
def splits():
  """Realistically sized splits, small images to stay fast."""
  sizes = {"train": 3000, "val": 300, "test": 300, "compositional": 300}
  return {
    name: generation.generate_split(name, n, seed=0, image_size=SIZE) for name, n in sizes.items()
  }


def _image_hashes(split):
  return {hashlib.sha256(image.tobytes()).hexdigest() for image in split.images}


def _pairs(scene):
  return {(obj.color, obj.shape) for obj in scene}


def _obj(shape="circle", color="red", size="small", row=0, col=0):
  return scenes.ShapeObject(shape, color, size, row, col, (0, 0, 1, 1))


def test_same_seed_gives_identical_output():
  a = generation.generate_split("train", 200, seed=3, image_size=SIZE)
  b = generation.generate_split("train", 200, seed=3, image_size=SIZE)
  assert a.images.tobytes() == b.images.tobytes()
  np.testing.assert_array_equal(a.image_ids, b.image_ids)
  assert a.captions == b.captions
  assert a.scenes == b.scenes


def test_different_seed_gives_different_output():
  a = generation.generate_split("train", 200, seed=3, image_size=SIZE)
  b = generation.generate_split("train", 200, seed=4, image_size=SIZE)
  assert a.images.tobytes() != b.images.tobytes()
  assert a.captions != b.captions
  assert a.scenes != b.scenes


@pytest.mark.parametrize("image_size", [32, 64, 100, 128])
def test_shapes_and_dtypes(image_size):
  data = generation.generate_split("val", 50, image_size=image_size)
  assert data.images.shape == (50, image_size, image_size, 3)
  assert data.images.dtype == np.uint8
  assert data.image_ids.shape == (50,) and data.image_ids.dtype == np.int64
  assert len(data.captions) == len(data.scenes) == 50
  assert all(len(c) == 5 for c in data.captions)
  assert all(isinstance(obj, scenes.ShapeObject) for scene in data.scenes for obj in scene)


def test_image_ids_unique_across_splits(splits):
  ids = np.concatenate([s.image_ids for s in splits.values()])
  assert len(np.unique(ids)) == len(ids)


def test_splits_disjoint_by_image_bytes(splits):
  hashes = {name: _image_hashes(split) for name, split in splits.items()}
  for a, b in itertools.combinations(hashes, 2):
    assert not hashes[a] & hashes[b], f"{a} and {b} share images"


def test_one_object_splits_disjoint_and_unique_within():
  # One-object scenes are few (a few thousand at 32 px); the split buckets must
  # still keep them apart, and a split smaller than its pool has no repeats.
  one = dict(image_size=SIZE, min_objects=1, max_objects=1)
  train = generation.generate_split("train", 2000, **one)
  val = generation.generate_split("val", 200, **one)
  test = generation.generate_split("test", 200, **one)
  hashes = [_image_hashes(s) for s in (train, val, test)]
  assert [len(h) for h in hashes] == [2000, 200, 200]
  for a, b in itertools.combinations(hashes, 2):
    assert not a & b


def test_one_object_pool_is_reused_when_exhausted():
  # The val pool of one-object scenes at 32 px is a few hundred; asking for
  # more must repeat scenes rather than fail or leak into other buckets.
  one = dict(image_size=SIZE, min_objects=1, max_objects=1)
  val = generation.generate_split("val", 1500, **one)
  train = generation.generate_split("train", 500, **one)
  assert len(_image_hashes(val)) < 1500
  assert not _image_hashes(val) & _image_hashes(train)


def test_compositional_split_holds_held_out_pairs(splits):
  held = set(scenes.DEFAULT_HELD_OUT)
  assert all(_pairs(scene) & held for scene in splits["compositional"].scenes)
  for name in ("train", "val", "test"):
    assert not any(_pairs(scene) & held for scene in splits[name].scenes), name
  train_colors = {obj.color for scene in splits["train"].scenes for obj in scene}
  train_shapes = {obj.shape for scene in splits["train"].scenes for obj in scene}
  assert {c for c, _ in held} <= train_colors
  assert {s for _, s in held} <= train_shapes


def test_custom_held_out_pairs():
  held = (("yellow", "circle"),)
  comp = generation.generate_split("compositional", 100, image_size=SIZE, held_out_pairs=held)
  train = generation.generate_split("train", 300, image_size=SIZE, held_out_pairs=held)
  assert all(("yellow", "circle") in _pairs(scene) for scene in comp.scenes)
  assert not any(("yellow", "circle") in _pairs(scene) for scene in train.scenes)
  # The default held-out pairs are ordinary training pairs here.
  assert any(("red", "triangle") in _pairs(scene) for scene in train.scenes)


def test_held_out_pairs_leaving_exactly_enough_pairs():
  all_pairs = [(c, s) for c in scenes.COLORS for s in scenes.SHAPES]
  held = tuple(all_pairs[2:])
  data = generation.generate_split("train", 50, image_size=SIZE, max_objects=2, held_out_pairs=held)
  assert all(_pairs(scene) <= set(all_pairs[:2]) for scene in data.scenes)


def test_scene_structure(splits):
  for name, split in splits.items():
    counts = set()
    for scene in split.scenes:
      counts.add(len(scene))
      cells = [(obj.row, obj.col) for obj in scene]
      assert len(set(cells)) == len(cells), name
      assert cells == sorted(cells)
      assert len(_pairs(scene)) == len(scene), name
      for obj in scene:
        assert obj.shape in scenes.SHAPES and obj.color in scenes.COLORS
        assert obj.size in scenes.SIZES and 0 <= obj.row < 3 and 0 <= obj.col < 3
    assert counts == {1, 2, 3}, name


def test_object_count_bounds():
  data = generation.generate_split("test", 100, image_size=SIZE, min_objects=2, max_objects=2)
  assert {len(scene) for scene in data.scenes} == {2}


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_objects_stay_inside_their_cells(image_size):
  data = generation.generate_split("train", 300, image_size=image_size)
  bounds = [(k * image_size) // 3 for k in range(4)]
  for scene in data.scenes:
    for obj in scene:
      x0, y0, x1, y1 = obj.bbox
      assert bounds[obj.col] <= x0 < x1 <= bounds[obj.col + 1]
      assert bounds[obj.row] <= y0 < y1 <= bounds[obj.row + 1]


@pytest.mark.parametrize("image_size", [32, 64])
def test_drawn_pixels_match_scene(image_size):
  data = generation.generate_split("train", 300, image_size=image_size)

  def packed(rgb):
    rgb = np.asarray(rgb, dtype=np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]

  palette = {int(packed(rgb)) for rgb in RGB.values()} | {0}
  assert set(np.unique(packed(data.images)).tolist()) <= palette
  counts = {}
  for image, scene in zip(data.images, data.scenes):
    drawn = 0
    for obj in scene:
      x0, y0, x1, y1 = obj.bbox
      crop = image[y0:y1, x0:x1]
      own = np.all(crop == RGB[obj.color], axis=-1)
      # Every lit pixel in the box is the object's; the box is tight.
      assert np.array_equal(own, crop.any(axis=-1))
      assert own[0].any() and own[-1].any() and own[:, 0].any() and own[:, -1].any()
      assert tuple(image[(y0 + y1) // 2, (x0 + x1) // 2]) == RGB[obj.color]
      counts.setdefault((obj.shape, obj.size), []).append(int(own.sum()))
      drawn += int(own.sum())
    assert drawn == int(image.any(axis=-1).sum()), "pixels outside the objects"
  for shape in scenes.SHAPES:
    assert min(counts[shape, "large"]) > 2 * max(counts[shape, "small"]), shape
  large = min(min(counts[s, "large"]) for s in scenes.SHAPES)
  small = max(max(counts[s, "small"]) for s in scenes.SHAPES)
  assert large > small


def test_shapes_are_distinguishable():
  data = generation.generate_split("train", 300, image_size=64)
  masks = {}
  for image, scene in zip(data.images, data.scenes):
    for obj in scene:
      x0, y0, x1, y1 = obj.bbox
      masks.setdefault((obj.shape, obj.size), image[y0:y1, x0:x1].any(axis=-1))
  for size in scenes.SIZES:
    fill = {s: masks[s, size].mean() for s in scenes.SHAPES}
    assert fill["square"] == 1.0
    assert 0.6 < fill["circle"] < 0.95
    assert 0.35 < fill["triangle"] < 0.65


def test_relations():
  a = _obj(row=0, col=0)
  b = _obj(row=1, col=2)
  c = _obj(row=0, col=2)
  assert scenes.relation_holds(a, b, "left") and not scenes.relation_holds(a, b, "right")
  assert scenes.relation_holds(a, b, "above") and not scenes.relation_holds(a, b, "below")
  assert scenes.relation_holds(b, a, "right") and scenes.relation_holds(b, a, "below")
  assert scenes.true_relations(a, b) == ["left", "above"]
  assert scenes.true_relations(c, b) == ["above"]
  assert scenes.true_relations(a, a) == []
  with pytest.raises(ValueError, match="Unknown relation"):
    scenes.relation_holds(a, b, "near")


def test_captions_format_and_variety(splits):
  for split in splits.values():
    for captions, scene in zip(split.captions, split.scenes):
      assert len(captions) == 5
      assert len(set(captions)) == 5, captions
      for caption in captions:
        assert caption == caption.lower() == " ".join(caption.split())
        assert not caption.endswith(".") and caption.count(",") <= 1
        for obj in scene:
          assert f"{obj.size} {obj.color} {obj.shape}" in caption


def test_diagonal_pairs_use_both_relation_kinds(splits):
  horizontal = vertical = 0
  for captions, scene in zip(splits["train"].captions, splits["train"].scenes):
    if len(scene) == 2 and scene[0].row != scene[1].row and scene[0].col != scene[1].col:
      for caption in captions:
        horizontal += "left" in caption or "right" in caption
        vertical += any(w in caption.split() for w in ("above", "over", "below", "under"))
  assert horizontal > 50 and vertical > 50


def test_captions_per_image():
  data = generation.generate_split("train", 20, image_size=SIZE, captions_per_image=9)
  assert all(len(c) == 9 for c in data.captions)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(split="training"), "Unknown split"),
    (dict(num_examples=0), "num_examples"),
    (dict(num_examples=2.5), "num_examples"),
    (dict(image_size=31), "image_size"),
    (dict(image_size=True), "image_size"),
    (dict(min_objects=0), "min_objects"),
    (dict(max_objects=4), "max_objects"),
    (dict(min_objects=3, max_objects=2), "exceeds"),
    (dict(held_out_pairs=(("pink", "circle"),)), "unknown colour"),
    (dict(held_out_pairs=(("red", "star"),)), "unknown shape"),
    (dict(held_out_pairs=("red",)), "pair"),
    (
      dict(held_out_pairs=tuple((c, s) for c in scenes.COLORS for s in scenes.SHAPES)[2:]),
      "fewer than max_objects",
    ),
    (dict(split="compositional", held_out_pairs=()), "at least one held-out"),
    (dict(captions_per_image=0), "captions_per_image"),
  ],
)
def test_argument_validation(kwargs, match):
  args = dict(split="train", num_examples=10, image_size=SIZE)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    generation.generate_split(args.pop("split"), args.pop("num_examples"), **args)
