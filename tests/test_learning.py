"""End to end on configs/smoke.py: train, evaluate, and check the model really learned.

Marked slow: two to three minutes on 2 CPU cores. CI runs it (`make test`); `make test-fast`
skips it.
"""

import csv
import json
import os

import keras
import numpy as np
import pytest

from captioning import evaluate
from captioning import experiment
from captioning import train
import helpers

pytestmark = pytest.mark.slow

# What is hard is relations, so they are asserted on their own. configs/smoke.py on the test
# split (beam 5), measured on 2 CPU cores with seeds 0, 1 and 2:
#   fact accuracy 0.930 / 0.910 / 0.835, 1-object 1.00 / 1.00 / 1.00, BLEU-4 0.82 / 0.80 / 0.78,
#   2-object fact accuracy 0.857 / 0.822 / 0.653,
#   relation probe left vs right 0.921 / 0.886 / 0.818, above vs below 0.932 / 0.901 / 0.667.
# The same config trained image-blind (every image black) scored 2-object fact accuracy 0.000,
# fact accuracy 0.030 and a relation probe of 0.461 / 0.520; chance is 0.5 per direction, and a
# model that names both objects but guesses the relation is right about 0.375 of the time. With
# 800 steps (the smoke config before) 2-object fact accuracy was 0.20 and the probe 0.53 / 0.54:
# chance. The thresholds sit below the worst seed and well above all of those. Under `make test`
# (one TensorFlow thread per worker, tests/conftest.py) seed 0 scored fact accuracy 0.890,
# 2-object 0.776, BLEU-4 0.816, probe 0.855 / 0.804, no unfinished captions.
MIN_FACT_ACCURACY = 0.70
MIN_FACT_ACCURACY_1OBJ = 0.90
MIN_FACT_ACCURACY_2OBJ = 0.45
MIN_RELATION_ACCURACY = 0.60  # each of horizontal and vertical
MIN_BLEU_4 = 0.65


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("smoke"))
  val_metrics = train.train_and_evaluate(helpers.load_config("smoke"), workdir)
  test_report = evaluate.evaluate_workdir(workdir, "test")
  return workdir, val_metrics, test_report


def test_smoke_training_learns_real_captions(trained):
  _, val_metrics, report = trained
  assert report["fact_accuracy"] >= MIN_FACT_ACCURACY, report
  assert report["fact_accuracy_1obj"] >= MIN_FACT_ACCURACY_1OBJ, report
  assert report["Bleu_4"] >= MIN_BLEU_4, report
  assert report["unfinished_captions"] <= 0.02
  assert val_metrics["fact_accuracy"] >= MIN_FACT_ACCURACY - 0.1


def test_smoke_training_learns_where_things_are(trained):
  _, _, report = trained
  assert report["fact_accuracy_2obj"] >= MIN_FACT_ACCURACY_2OBJ, report
  assert report["relation_accuracy_horizontal"] >= MIN_RELATION_ACCURACY, report
  assert report["relation_accuracy_vertical"] >= MIN_RELATION_ACCURACY, report


def test_evaluation_writes_coco_results_and_metrics(trained):
  workdir, _, report = trained
  with open(os.path.join(workdir, "eval", "test", "captions.json")) as f:
    captions = json.load(f)
  with open(os.path.join(workdir, "eval", "test", "metrics.json")) as f:
    metrics = json.load(f)
  assert len(captions) == report["num_images"] == 200
  assert all(set(c) == {"image_id", "caption"} and isinstance(c["image_id"], int) for c in captions)
  assert len({c["image_id"] for c in captions}) == len(captions)
  for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "fact_accuracy"):
    assert 0.0 <= metrics[key] <= 10.0, key
  for key in ("relation_accuracy", "relation_accuracy_horizontal", "relation_accuracy_vertical"):
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics["step"] == 2400 and metrics["split"] == "test"
  # The per-image file: every caption's own scores and its fact verdict, which add up to the
  # split's numbers.
  with open(os.path.join(workdir, "eval", "test", "captions_per_image.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["image_id"]) for r in rows] == [c["image_id"] for c in captions]
  assert np.mean([int(r["fact_correct"]) for r in rows]) == pytest.approx(metrics["fact_accuracy"])
  assert all(bool(r["fact_error"]) != (r["fact_correct"] == "1") for r in rows)
  mean_cider = np.mean([float(r["CIDEr"]) for r in rows])
  np.testing.assert_allclose(mean_cider, metrics["CIDEr"], rtol=1e-4)
  if metrics["tokenizer"] == "ptb":
    assert "METEOR" in metrics
  else:
    assert "METEOR" in metrics["skipped_metrics"]


def test_tensorboard_has_what_a_researcher_looks_at(trained):
  workdir, _, _ = trained
  train_tags = helpers.read_tags(os.path.join(workdir, "tensorboard", "train"))
  for tag in (
    "train/loss",
    "train/perplexity",
    "train/learning_rate",
    "train/grad_norm",
    "train/steps_per_sec",
    "train/examples_per_sec",
  ):
    assert train_tags.get(tag) == "scalars", tag
  assert train_tags.get("config") == "text"
  eval_tags = helpers.read_tags(os.path.join(workdir, "tensorboard", "eval"))
  assert eval_tags.get("val/Bleu_4") == "scalars"
  assert eval_tags.get("val/fact_accuracy") == "scalars"
  assert eval_tags.get("val/relation_accuracy") == "scalars"
  assert eval_tags.get("val/perplexity") == "scalars"
  assert eval_tags.get("val/samples") == "text"
  assert eval_tags.get("val/attention") == "images"
  test_tags = helpers.read_tags(os.path.join(workdir, "tensorboard", "eval_test"))
  assert test_tags.get("test/Bleu_4") == "scalars"


def test_another_split_and_decoding_get_their_own_results_and_keep_the_defaults(trained):
  # The script's --workdir path is run in tests/test_real_photos.py; this is the same library
  # call, without a second process starting TensorFlow.
  workdir, _, report = trained
  greedy = evaluate.evaluate_workdir(
    workdir, "compositional", num_examples=40, decode_method="greedy"
  )
  assert greedy["decode_method"] == "greedy" and greedy["num_images"] == 40
  assert greedy["split"] == "compositional" and "fact_accuracy" in greedy
  with open(os.path.join(workdir, "eval", "compositional_greedy", "metrics.json")) as f:
    written = json.load(f)
  assert (written["split"], written["decode_method"], written["num_images"]) == (
    "compositional",
    "greedy",
    40,
  )
  assert os.path.exists(os.path.join(workdir, "eval", "compositional_greedy", "captions.json"))
  assert not os.path.exists(os.path.join(workdir, "eval", "compositional"))  # the default's folder
  # The default decoding's results are untouched (tests/test_evaluate.py: each decoding's
  # folder).
  with open(os.path.join(workdir, "eval", "test", "metrics.json")) as f:
    default = json.load(f)
  assert default["num_images"] == report["num_images"] == 200
  assert default["decode_method"] == report["decode_method"] == "beam"


def test_the_model_file_matches_the_checkpoint(trained):
  # Loading it in a fresh process as the README says: tests/models/test_captioner.py.
  workdir, _, _ = trained
  model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
  _, _, restored, _ = experiment.restore(workdir)
  batch = {"image": np.zeros([2, 32, 32, 3], np.uint8), "tokens": np.ones([2, 5], np.int32)}
  np.testing.assert_allclose(model(batch)["logits"], restored(batch)["logits"], atol=1e-5)


def test_workdir_records_where_the_model_came_from(trained):
  workdir, _, _ = trained
  with open(os.path.join(workdir, "provenance.json")) as f:
    runs = json.load(f)
  assert len(runs) == 1 and runs[0]["start_step"] == 0
  assert runs[0]["tensorflow"] and runs[0]["keras"] and runs[0]["python"]
