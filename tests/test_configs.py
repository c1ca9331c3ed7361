"""Every shipped config: every key is read, and with `model.encoder.weights=none` each one
builds its run and trains a step without downloading anything."""

import glob
import os

import numpy as np
import pytest

from captioning import config_checks
from captioning import trainer
import helpers

# Each config file, with each source it offers.
SHIPPED = [
  ("shapes_sat", None),
  ("shapes_transformer", None),
  ("smoke", None),
  ("smoke", "transformer"),
  ("flickr8k_sat", None),
  ("flickr8k_transformer", None),
  ("coco_sat", "karpathy"),
  ("coco_sat", "coco_json"),
  ("coco_sat", "tfds"),
  ("coco_transformer", "karpathy"),
  ("sat_tutorial_size", None),  # trained at a tiny size by tests/test_bench.py
  ("transformer_tutorial_size", None),
]


def test_every_config_file_is_covered():
  files = {
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(helpers.ROOT, "configs", "*.py"))
  }
  assert files == {name for name, _ in SHIPPED}


@pytest.mark.parametrize("name,source", SHIPPED)
def test_every_key_is_read(name, source):
  config = helpers.load_config(name, source)
  config_checks.validate(config)  # every section reaches the code that takes it, whole
  with config.unlocked():
    config.train.unused = 1
  with pytest.raises(ValueError, match=r"config\.train has keys no code reads: \['unused'\]"):
    config_checks.validate(config)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp("photos")
  records = helpers.photo_records(
    str(root), sizes=(("train", 8), ("val", 2), ("test", 2)), bad=False
  )
  path = str(root / "dataset.json")
  helpers.write_karpathy_json(path, records, coco_style=True)
  return root, path


# The real-photo configs, shrunk: 64 px photos, batch 2, no download.
SMALL = {
  "data.image_size": 64,
  "train.batch_size": 2,
  "train.num_steps": 1,
  "train.eval_every": 10,
  "eval.num_examples": 2,
  "eval.batch_size": 2,
}


@pytest.mark.parametrize(
  "name",
  [
    "shapes_sat",
    "shapes_transformer",
    "flickr8k_sat",
    "flickr8k_transformer",
    "coco_sat",
    "coco_transformer",
  ],
)
def test_each_config_trains_a_step_without_downloads(name, photos, tmp_path):
  if name.startswith("shapes"):
    overrides = {
      "data.num_train": 40,
      "data.num_val": 4,
      "data.num_test": 4,
      "data.num_compositional": 4,
      "train.batch_size": 4,
      "train.num_steps": 1,
    }
  else:
    root, path = photos
    overrides = dict(
      SMALL,
      **{
        "model.encoder.weights": "none",
        "data.annotations": path,
        "data.image_root": str(root / "images"),
        "data.cache_dir": str(root / "cache"),
      },
    )
  config = helpers.load_config(name, **overrides)
  run = trainer.TrainingRun.create(config, str(tmp_path / "w"))
  metrics = run.run_step(next(run.batches()))
  assert np.isfinite(float(metrics["loss"]))
