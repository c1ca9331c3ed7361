"""Training and evaluation on real-photo datasets, end to end, on files the test writes:
Karpathy JSON, COCO JSON and TFDS (mocked; nothing is downloaded)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from captioning import evaluate
from captioning import train
import helpers

# A tiny model on 32 px images, a few steps: what is checked is the plumbing, not learning.
TINY = {
  "data.image_size": 32,
  "data.max_caption_length": 8,
  "data.min_count": 1,
  "model.encoder": {"name": "small_cnn", "weights": "none", "widths": (8, 16), "strides": (2, 2)},
  "model.decoder.embed_dim": 16,
  "model.decoder.hidden_dim": 32,
  "model.decoder.attention_dim": 16,
  "train.batch_size": 8,
  "train.num_steps": 6,
  "train.warmup_steps": 2,
  "train.log_every": 3,
  "train.eval_every": 6,
  "train.checkpoint_every": 3,
  "decode.max_length": 8,
  "decode.beam_size": 2,
  "eval.num_examples": 4,
  "eval.batch_size": 4,
  "eval.evaluators.captions.metrics": ("Bleu", "ROUGE_L", "CIDEr"),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp("photos")
  records = helpers.photo_records(str(root))
  karpathy = str(root / "dataset_coco.json")
  helpers.write_karpathy_json(karpathy, records, coco_style=True)
  coco = {}
  for split in ("train", "val", "test"):
    coco[split] = str(root / f"captions_{split}.json")
    helpers.write_coco_json(coco[split], [r for r in records if r["split"] == split])
  return root, records, karpathy, coco


def expected_ids(records, split):
  return sorted(r["id"] for r in records if r["split"] == split and r["kind"] in helpers.GOOD_KINDS)


def check_trained(workdir, records):
  scalars = helpers.read_scalars(os.path.join(workdir, "tensorboard", "train"))
  assert sorted(scalars["train/loss"]) == [3, 6]
  for reason in helpers.BAD_KINDS.values():
    assert scalars[f"data/train_skipped_{reason}"] == {0: 1.0}, reason
  tags = helpers.read_tags(os.path.join(workdir, "tensorboard", "train"))
  assert tags["data/skipped_images"] == "text"
  eval_tags = helpers.read_tags(os.path.join(workdir, "tensorboard", "eval"))
  assert eval_tags["val/Bleu_4"] == "scalars" and eval_tags["val/attention"] == "images"


def check_evaluated(workdir, records, report):
  with open(os.path.join(workdir, "eval", "test", "captions.json")) as f:
    captions = json.load(f)
  assert sorted(c["image_id"] for c in captions) == expected_ids(records, "test")
  with open(os.path.join(workdir, "eval", "test", "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["num_images"] == 4 and metrics["split"] == "test" and metrics["step"] == 6
  for key in ("Bleu_4", "CIDEr", "perplexity"):
    assert np.isfinite(metrics[key]), key
  assert metrics == report or report is None
  # One row per image: its caption, its own scores, nothing dataset-specific for photos.
  with open(os.path.join(workdir, "eval", "test", "captions_per_image.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["image_id"]) for r in rows] == [c["image_id"] for c in captions]
  assert [r["caption"] for r in rows] == [c["caption"] for c in captions]
  assert {"finished", "Bleu_4", "ROUGE_L", "CIDEr"} <= set(rows[0])
  assert "fact_correct" not in rows[0]
  mean_cider = np.mean([float(r["CIDEr"]) for r in rows])
  np.testing.assert_allclose(mean_cider, metrics["CIDEr"], rtol=1e-4, atol=1e-6)


def test_karpathy_json_trains_and_evaluates_with_the_script(photos, tmp_path):
  root, records, karpathy, _ = photos
  config = helpers.load_config(
    "flickr8k_sat",
    **TINY,
    **{
      "data.annotations": karpathy,
      "data.image_root": str(root / "images"),
      "data.cache_dir": str(root / "cache"),
    },
  )
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(config, workdir)
  check_trained(workdir, records)
  subprocess.run(
    [sys.executable, os.path.join(helpers.ROOT, "scripts", "evaluate.py"),
     f"--workdir={workdir}", "--split=test"],
    check=True, cwd=helpers.ROOT, capture_output=True, timeout=300,
  )  # fmt: skip
  check_evaluated(workdir, records, None)


def test_coco_json_trains_and_evaluates(photos, tmp_path):
  root, records, _, coco = photos
  overrides = {f"data.annotations.{s}": path for s, path in coco.items()}
  overrides.update({f"data.image_root.{s}": str(root / "images") for s in coco})
  config = helpers.load_config("coco_sat", "coco_json", **TINY, **overrides,
                               **{"data.cache_dir": str(root / "cache")})  # fmt: skip
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(config, workdir)
  check_trained(workdir, records)
  report = evaluate.evaluate_workdir(workdir, "test")
  check_evaluated(workdir, records, report)


def test_tfds_trains_and_evaluates(tmp_path):
  config = helpers.load_config(
    "coco_sat",
    "tfds",
    **TINY,
    **{
      "data.cache_dir": str(tmp_path / "cache"),
      "data.split_names": {"train": "train", "val": "val", "test": "test"},
    },
  )
  workdir = str(tmp_path / "w")
  calls = []
  with tfds.testing.mock_data(as_dataset_fn=helpers.tfds_as_dataset(calls)):
    train.train_and_evaluate(config, workdir)
    report = evaluate.evaluate_workdir(workdir, "test")  # exports the test split
    evaluate.evaluate_workdir(workdir, "val")  # reads the export made in training
  assert calls == ["train", "val", "test"]
  assert report["num_images"] == 4 and np.isfinite(report["Bleu_4"])
  with open(os.path.join(workdir, "eval", "test", "captions.json")) as f:
    assert sorted(c["image_id"] for c in json.load(f)) == [300, 301, 302, 303]
