"""The `shapes` dataset as the pipeline sees it: splits, its own caption scores, curricula."""

import numpy as np
import pytest

from captioning.data import datasets
from captioning.data import pipeline
from captioning.data import tokenizer as tokenizer_lib
from captioning.data.shapes import dataset
from captioning.data.shapes import scenes

SIZES = dict(num_train=60, num_val=20, num_test=20, num_compositional=20)


def shapes_dataset(**overrides):
  return dataset.ShapesDataset(image_size=32, seed=0, **dict(SIZES, **overrides))


def test_splits_carry_their_scenes_and_take_keeps_them_aligned():
  data = shapes_dataset()
  assert data.SPLITS == scenes.SPLITS and data.train_split == "train" and data.eval_split == "val"
  split = data.split("test")
  assert isinstance(split, dataset.ShapesSplit) and len(split) == 20
  head = split.take(5)
  assert len(head.images) == len(head.captions) == len(head.scenes) == 5
  assert head.scene_by_id() == {int(i): s for i, s in zip(split.image_ids[:5], split.scenes[:5])}
  with pytest.raises(ValueError, match="Unknown split 'dev'"):
    data.split("dev")


def test_created_by_name_from_the_data_section():
  config = dict(
    name="shapes",
    image_size=32,
    max_caption_length=25,
    vocab_size=100,
    min_count=1,
    bucket_length_multiple=8,
    **SIZES,
  )
  assert isinstance(datasets.create(config, seed=0), dataset.ShapesDataset)
  with pytest.raises(ValueError, match=r"config\.data\.num_tarin is not an argument"):
    datasets.create(dict(config, num_tarin=3), seed=0)
  with pytest.raises(ValueError, match=r"config\.data lacks num_test"):
    datasets.create({k: v for k, v in config.items() if k != "num_test"}, seed=0)
  with pytest.raises(ValueError, match=r"config\.data: num_val must be a positive integer"):
    datasets.create(dict(config, num_val=0), seed=0)
  with pytest.raises(ValueError, match=r"unknown config\.data\.name 'imagenet'"):
    datasets.create(dict(config, name="imagenet"), seed=0)


def test_generated_captions_score_by_facts_and_a_plain_split_adds_nothing():
  split = shapes_dataset().split("val")
  truth = {int(i): c[0] for i, c in zip(split.image_ids, split.captions)}
  scores = split.score_captions(truth)
  assert scores["fact_accuracy"] == 1.0 and scores["num_scored"] == 20
  plain = datasets.CaptionSplit("val", split.images, split.image_ids, split.captions)
  assert plain.score_captions(truth) == {}


def test_curriculum_by_number_of_objects():
  data = shapes_dataset()
  split = data.split("train")
  tok = tokenizer_lib.Tokenizer.build([c for cs in split.captions for c in cs], vocab_size=100)
  tokens = pipeline.encode_captions(split, tok, max_length=30)
  words = (tokens != 0).sum(-1) - 2
  objects = np.array([len(s) for s in split.scenes])
  pairs = data.curriculum_pairs(
    split, words, min_words=0, max_words=30, min_objects=2, max_objects=2
  )
  assert pairs.shape == tokens.shape[:2]
  np.testing.assert_array_equal(pairs.any(1), objects == 2)
  # Words and objects combine.
  both = data.curriculum_pairs(split, words, min_words=0, max_words=8, min_objects=2, max_objects=2)
  assert both.sum() < pairs.sum() and np.all(words[both] <= 8) and np.all(objects[both.any(1)] == 2)
  # 0 objects on both ends: any number of objects.
  anything = data.curriculum_pairs(split, words, min_words=0, max_words=30)
  assert anything.all()
  stream = pipeline.TrainStream(
    split,
    tokens,
    batch_size=4,
    seed=0,
    length_multiple=0,
    curriculum_steps=6,
    curriculum_pairs=pairs,
  )
  early = {int(i) for s in range(6) for i in stream.batch(s)["image_id"]}
  by_id = dict(zip(split.image_ids.tolist(), objects.tolist()))
  assert {by_id[i] for i in early} == {2}
  with pytest.raises(ValueError, match="min_objects and max_objects"):
    data.curriculum_pairs(split, words, min_words=0, max_words=9, min_objects=3, max_objects=2)
