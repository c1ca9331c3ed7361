"""Images in the wild: what the index checks, and what tf.data decodes and resizes."""

import os

import numpy as np
import pytest
import tensorflow as tf

from captioning.data import images
import helpers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("wild")
  files = {}
  for kind in (*helpers.GOOD_KINDS, *helpers.BAD_KINDS):
    files[kind] = str(root / f"{kind}.img")
    files[f"{kind}_pixels"] = helpers.write_image(files[kind], kind, seed=3)
  return files


def test_every_good_kind_decodes_to_rgb_and_every_bad_kind_is_named(folder):
  for kind in helpers.GOOD_KINDS:
    assert images.check_file(folder[kind]) is None, kind
    decoded = images.decode(tf.io.read_file(folder[kind])).numpy()
    assert decoded.dtype == np.uint8 and decoded.shape == folder[f"{kind}_pixels"].shape, kind
  # Lossless formats keep the pixels; a GIF's first frame is the one read.
  for kind in ("rgba_png", "bmp"):
    np.testing.assert_array_equal(
      images.decode(tf.io.read_file(folder[kind])).numpy(), folder[f"{kind}_pixels"]
    )
  for kind, reason in helpers.BAD_KINDS.items():
    if kind != "no_caption":  # a good file; its captions are the problem
      assert images.check_file(folder[kind]) == reason, kind


def test_resize_keeps_the_aspect_ratio_by_crop_or_pad(folder):
  wide = images.decode(tf.io.read_file(folder["wide"]))  # 36 x 80
  cropped = images.resize(wide, 32, "crop").numpy()
  padded = images.resize(wide, 32, "pad").numpy()
  assert cropped.shape == padded.shape == (32, 32, 3) and cropped.dtype == np.uint8
  # Pad scales 80 -> 32 wide, 36 -> 14 high, centred on black: rows above and below are black.
  rows = np.flatnonzero(padded.max(axis=(1, 2)) > 0)
  assert rows.min() >= 8 and rows.max() <= 23 and padded[:8].max() == 0
  # Crop scales 36 -> 32 high (80 -> 71 wide) and keeps the centre: no black border.
  assert cropped[0].max() > 0 and cropped[:, 0].max() > 0
  np.testing.assert_array_equal(images.load(folder["wide"], 32, "crop").numpy(), cropped)
  with pytest.raises(ValueError, match="resize mode"):
    images.resize(wide, 32, "stretch")


def test_scan_checks_each_file_once_and_again_when_it_changes(folder, tmp_path, monkeypatch):
  paths = [folder[k] for k in (*helpers.GOOD_KINDS, "corrupt", "missing")]
  calls = []
  check = images.check_file
  monkeypatch.setattr(images, "check_file", lambda p: calls.append(p) or check(p))
  first = images.scan(paths, cache_dir=str(tmp_path))
  assert first == [None] * len(helpers.GOOD_KINDS) + ["undecodable", "missing_file"]
  assert len(calls) == len(paths)
  calls.clear()
  assert images.scan(paths, cache_dir=str(tmp_path)) == first and not calls
  # A file that changes (here: becomes empty) is checked again; the others are not.
  changed = str(tmp_path / "changes.jpg")
  helpers.write_image(changed, "jpeg")
  assert images.scan(paths + [changed], cache_dir=str(tmp_path))[-1] is None
  open(changed, "wb").close()
  os.utime(changed, ns=(1, 1))
  calls.clear()
  assert images.scan(paths + [changed], cache_dir=str(tmp_path))[-1] == "empty_file"
  assert calls == [os.path.abspath(changed)]


def test_file_images_read_as_tf_data_and_numpy_alike(folder):
  paths = [folder[k] for k in helpers.GOOD_KINDS]
  source = images.FileImages(paths, 24, "pad")
  assert len(source) == len(paths) and source.image_shape == (24, 24, 3)
  eager = source.numpy([2, 0])
  loader = source.loader()
  in_graph = tf.data.Dataset.from_tensor_slices(tf.constant([2, 0], tf.int64)).map(loader)
  np.testing.assert_array_equal(np.stack(list(in_graph.as_numpy_iterator())), eager)
  assert len(source[:3]) == 3
  array = images.ArrayImages(eager)
  np.testing.assert_array_equal(array.numpy([1]), eager[1:])
  with pytest.raises(ValueError, match="uint8"):
    images.ArrayImages(eager.astype(np.float32))
