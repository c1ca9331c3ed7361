"""The feature cache: written once (and resumably), read back by index, refused when stale,
and equivalent to reading images (no download: the backbone's weights are "none")."""

import json
import os

import numpy as np
import pytest

from captioning import decoding
from captioning import experiment
from captioning import features
from captioning import files
from captioning import train
from captioning import trainer
import helpers

CONFIG = {
  "data.image_size": 64,
  "data.num_train": 60,
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "data.bucket_length_multiple": 0,
  "model.encoder": {"name": "mobilenet_v3_small", "weights": "none", "project_dim": 16},
  "model.neck.relative_keypoints": 0,
  "train.num_steps": 4,
  "train.batch_size": 8,
  "train.log_every": 2,
  "train.eval_every": 4,
  "train.checkpoint_every": 2,
  "train.warmup_steps": 1,
  "eval.num_examples": 8,
  "eval.batch_size": 8,
  "eval.evaluators": {"perplexity": {}, "captions": {"metrics": ("Bleu",), "num_samples": 2}},
  "decode.beam_size": 2,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  output = str(tmp_path_factory.mktemp("cache"))
  summary = features.precompute(helpers.load_config(**CONFIG), output, dtype="float32")
  return output, summary


def test_every_split_is_cached_with_its_ids(cache):
  output, summary = cache
  assert set(summary) == {"train", "val", "test", "compositional"}
  train_cache = np.load(os.path.join(output, "train.npy"), mmap_mode="r")
  assert train_cache.shape == (60, 2, 2, 576) and train_cache.dtype == np.float32
  with open(os.path.join(output, "train.json")) as f:
    assert len(json.load(f)["image_ids"]) == 60
  assert summary["train"]["bytes"] >= 60 * 2 * 2 * 576 * 4
  # A finished cache is not written again.
  assert features.precompute(helpers.load_config(**CONFIG), output, dtype="float32") == {}


def test_an_interrupted_cache_resumes_to_the_same_result(cache, tmp_path, monkeypatch):
  output, _ = cache
  resumed = str(tmp_path / "resumed")
  # The same backbone weights as the finished cache (a fresh run draws new random ones).
  os.makedirs(resumed)
  os.link(os.path.join(output, "backbone.weights.h5"), os.path.join(resumed, "backbone.weights.h5"))
  config = helpers.load_config(**CONFIG)
  calls = []
  write_text = files.write_text

  def stop_after_two_chunks(path, text):
    write_text(path, text)
    calls.extend([path] if path.endswith(".progress") else [])
    if len(calls) == 2:
      raise KeyboardInterrupt

  monkeypatch.setattr(files, "write_text", stop_after_two_chunks)
  with pytest.raises(KeyboardInterrupt):
    features.precompute(config, resumed, dtype="float32", batch_size=16)
  monkeypatch.undo()
  with open(os.path.join(resumed, "train.npy.progress")) as f:
    assert f.read() == "32"
  features.precompute(config, resumed, dtype="float32", batch_size=16)
  for split in ("train", "val"):
    np.testing.assert_array_equal(
      np.load(os.path.join(resumed, f"{split}.npy")), np.load(os.path.join(output, f"{split}.npy"))
    )


def test_training_on_the_cache_equals_training_on_images(cache, tmp_path):
  output, _ = cache
  config = helpers.load_config(**CONFIG, **{"data.features": output})
  run = trainer.TrainingRun.create(config, str(tmp_path / "w"))
  batch = next(iter(run.stream.dataset(0)))
  assert set(batch) == {"features", "tokens", "image_id"}
  assert batch["features"].shape == (8, 2, 2, 576)
  # The model got the cache's backbone weights: from pixels it computes what the cache holds.
  pixels = run.train_split.images.pictures(np.arange(8))
  np.testing.assert_allclose(
    run.model.encoder.frozen_maps(pixels).numpy(),
    run.train_split.images.numpy(np.arange(8)),
    atol=1e-5,
  )
  inputs = batch["tokens"][:, :-1]
  from_cache = run.model({"features": batch["features"], "tokens": inputs})["logits"]
  ids = {int(i): n for n, i in enumerate(run.train_split.image_ids)}
  images = run.train_split.images.pictures([ids[int(i)] for i in batch["image_id"]])
  from_pixels = run.model({"image": images, "tokens": inputs})["logits"]
  np.testing.assert_allclose(from_cache.numpy(), from_pixels.numpy(), atol=1e-4)


def test_a_cache_trained_model_trains_evaluates_and_captions_pixels(cache, tmp_path):
  output, _ = cache
  workdir = str(tmp_path / "w")
  config = helpers.load_config(**CONFIG, **{"data.features": output})
  train.train_and_evaluate(config, workdir)
  _, tokenizer, model, _ = experiment.restore(workdir)
  search = decoding.Search(model, tokenizer, method="greedy", max_length=10)
  run = trainer.TrainingRun.create(config, workdir)
  split = run.eval_split
  from_cache = search({"features": split.images.numpy(np.arange(8))})["tokens"].numpy()
  from_pixels = search(split.images.pictures(np.arange(8)))["tokens"].numpy()
  np.testing.assert_array_equal(from_cache, from_pixels)


def test_a_stale_cache_is_refused(cache, tmp_path):
  output, _ = cache
  # Other images than the dataset's (its annotations changed since): refused when read.
  changed = str(tmp_path / "changed")
  os.makedirs(changed)
  for name in os.listdir(output):
    os.link(os.path.join(output, name), os.path.join(changed, name))
  os.remove(os.path.join(changed, "val.json"))
  with open(os.path.join(changed, "val.json"), "w") as f:
    json.dump({"image_ids": list(range(8)), "skipped": {}}, f)
  dataset = features.open_dataset(helpers.load_config(**CONFIG, **{"data.features": changed}))
  with pytest.raises(features.StaleCacheError, match="holds other images"):
    dataset.split("val")
  for key, value, what in (
    ("data.image_size", 96, "data.image_size: 64 -> 96"),
    ("model.encoder", {"name": "efficientnet_b0", "weights": "none"}, "encoder.name"),
    ("seed", 3, "seed: 0 -> 3"),
  ):
    config = helpers.load_config(**dict(CONFIG, **{key: value}), **{"data.features": output})
    with pytest.raises(features.StaleCacheError, match=what):
      features.open_dataset(config)
  config = helpers.load_config(**dict(CONFIG, **{"data.num_val": 6}), **{"data.features": output})
  with pytest.raises(features.StaleCacheError, match=r"data\.num_val: 8 -> 6"):
    features.open_dataset(config)
  config = helpers.load_config(**CONFIG, **{"data.features": output + "_nothing"})
  with pytest.raises(features.StaleCacheError, match="no feature cache"):
    features.open_dataset(config)
  with pytest.raises(ValueError, match="needs a pretrained backbone"):
    features.precompute(
      helpers.load_config(**dict(CONFIG, **{"model.encoder": {"name": "small_cnn"}})), output
    )
