"""Input pipeline: deterministic, resumable training batches and complete evaluation passes."""

import numpy as np
import pytest

from captioning.data import datasets
from captioning.data import images as images_lib
from captioning.data import pipeline
from captioning.data import tokenizer as tokenizer_lib
import helpers


def tiny_split(n=10, k=3):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones([1, 4, 4, 3], np.uint8)
  captions = [[f"caption {i} number {j}" for j in range(k)] for i in range(n)]
  return datasets.CaptionSplit(
    "train", images_lib.ArrayImages(images), np.arange(100, 100 + n), captions
  )


def setup():
  split = tiny_split()
  tok = tokenizer_lib.Tokenizer.build([c for cs in split.captions for c in cs], vocab_size=50)
  return split, tok, pipeline.encode_captions(split, tok, max_length=6)


def test_batches_pair_each_image_with_its_own_captions():
  split, tok, tokens = setup()
  stream = pipeline.TrainStream(split, tokens, batch_size=7, seed=0)
  for step in range(10):
    batch = stream.batch(step)
    for image, caption, image_id in zip(batch["image"], batch["tokens"], batch["image_id"]):
      index = int(image_id) - 100
      assert image[0, 0, 0] == index
      assert tok.decode(caption).startswith(f"caption {index} number")


def test_every_pair_is_seen_once_per_epoch():
  split, _, tokens = setup()
  stream = pipeline.TrainStream(split, tokens, batch_size=5, seed=3)  # 30 pairs = 6 batches
  seen = [
    (int(i), tuple(t))
    for s in range(6)
    for i, t in zip(stream.batch(s)["image_id"], stream.batch(s)["tokens"])
  ]
  assert len(set(seen)) == 30
  # The next epoch is another order of the same pairs.
  nxt = [int(i) for s in range(6, 12) for i in stream.batch(s)["image_id"]]
  assert sorted(nxt) == sorted(i for i, _ in seen) and nxt != [i for i, _ in seen]


def test_stream_is_a_function_of_seed_and_step():
  split, _, tokens = setup()
  a = pipeline.TrainStream(split, tokens, batch_size=4, seed=1)
  b = pipeline.TrainStream(split, tokens, batch_size=4, seed=1)
  # Batches crossing epoch boundaries, asked for out of order, still agree.
  for step in (7, 0, 15, 8, 7):
    np.testing.assert_array_equal(a.batch(step)["tokens"], b.batch(step)["tokens"])
  c = pipeline.TrainStream(split, tokens, batch_size=4, seed=2)
  assert not np.array_equal(a.batch(0)["image_id"], c.batch(0)["image_id"])


def test_dataset_resumes_at_a_step():
  split, _, tokens = setup()
  stream = pipeline.TrainStream(split, tokens, batch_size=4, seed=0)
  full = [b["image_id"].numpy() for b in stream.dataset(0).take(9)]
  resumed = [b["image_id"].numpy() for b in stream.dataset(5).take(4)]
  for x, y in zip(full[5:], resumed):
    np.testing.assert_array_equal(x, y)


def assert_same_batches(stream, start, count):
  """The tf.data stream from `start` gives exactly the numpy reference batches."""
  for offset, batch in enumerate(stream.dataset(start).take(count)):
    expected = stream.batch(start + offset)
    for key in ("image", "tokens", "image_id"):
      np.testing.assert_array_equal(batch[key].numpy(), expected[key], err_msg=key)


def test_tf_data_stream_equals_the_plan_with_length_buckets_and_curriculum():
  split, tokens = curriculum_setup()
  assert_same_batches(curriculum_stream(split, tokens, 3, max_words=3), 0, 8)
  bucketed = pipeline.TrainStream(split, tokens, batch_size=4, seed=0, length_multiple=4)
  assert_same_batches(bucketed, 2, 6)
  spec = bucketed.dataset(0).element_spec
  assert spec["image"].shape == (4, 4, 4, 3) and spec["tokens"].shape == (4, None)


def test_the_parts_of_a_step_are_slices_of_its_batch_cut_to_the_batch_length():
  split, tokens = curriculum_setup()  # captions of 1, 3 or 5 words: buckets differ by slice
  stream = pipeline.TrainStream(split, tokens, batch_size=8, seed=0, length_multiple=2)
  # A worker with replicas 2 and 3 of 4 reads, step after step, those quarters of each batch.
  read = list(stream.dataset(3, num_parts=4, parts=range(2, 4)).take(6).as_numpy_iterator())
  for i, part in enumerate(read):
    expected, quarter = stream.batch(3 + i // 2), 2 + i % 2
    for key in ("image", "tokens", "image_id"):
      np.testing.assert_array_equal(part[key], expected[key][quarter * 2 : quarter * 2 + 2], key)
  with pytest.raises(ValueError, match="Cannot read parts"):
    stream.dataset(0, num_parts=3)


@pytest.fixture(scope="module")
def photo_split(tmp_path_factory):
  """A file-backed split: the Karpathy fixture's training images, read by tf.data."""
  from captioning.data import karpathy  # pylint: disable=import-outside-toplevel

  root = tmp_path_factory.mktemp("stream")
  path = str(root / "dataset.json")
  helpers.write_karpathy_json(path, helpers.photo_records(str(root)), coco_style=True)
  dataset = karpathy.KarpathyDataset(image_size=24, seed=0, annotations=path,
                                     image_root=str(root / "images"), cache_dir=None)  # fmt: skip
  return dataset.split("train")


def test_a_file_backed_stream_resumes_on_the_same_batches(photo_split):
  tok = tokenizer_lib.Tokenizer.build([c for cs in photo_split.captions for c in cs], vocab_size=99)
  tokens = pipeline.encode_captions(photo_split, tok, max_length=10)
  stream = pipeline.TrainStream(photo_split, tokens, batch_size=6, seed=3, length_multiple=4)
  # An interrupted run that resumes at step 7 sees the batches the uninterrupted run saw,
  # pixels included, across an epoch boundary (60 pairs = 10 batches an epoch).
  straight = list(stream.dataset(0).take(13).as_numpy_iterator())
  resumed = list(stream.dataset(7).take(6).as_numpy_iterator())
  for x, y in zip(straight[7:], resumed):
    for key in ("image", "tokens", "image_id"):
      np.testing.assert_array_equal(x[key], y[key])
  assert_same_batches(stream, 9, 2)
  assert straight[0]["image"].shape == (6, 24, 24, 3) and straight[0]["image"].dtype == np.uint8
  batches = list(pipeline.image_batches(photo_split, 5).as_numpy_iterator())
  np.testing.assert_array_equal(
    np.concatenate([b["image_id"] for b in batches]), photo_split.image_ids
  )


def test_eval_iterators_cover_the_split_once():
  split, _, tokens = setup()
  ids = np.concatenate([b["image_id"] for b in pipeline.image_batches(split, 4)])
  np.testing.assert_array_equal(ids, split.image_ids)
  pairs = sum(len(b["tokens"]) for b in pipeline.caption_batches(split, tokens, 7))
  assert pairs == 30


def test_images_without_captions_and_bad_batch_size_are_reported():
  split, tok, tokens = setup()
  bad = datasets.CaptionSplit("train", split.images[:2], split.image_ids[:2], [["a b"], []])
  with pytest.raises(ValueError, match="has no captions"):
    pipeline.encode_captions(bad, tok, 5)
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.TrainStream(split, tokens, batch_size=0, seed=0)
  # Images with fewer captions repeat their last one.
  uneven = datasets.CaptionSplit(
    "train",
    split.images[:2],
    split.image_ids[:2],
    [["caption 0 number 0"], ["caption 1 number 0", "caption 1"]],
  )
  encoded = pipeline.encode_captions(uneven, tok, 5)
  np.testing.assert_array_equal(encoded[0, 0], encoded[0, 1])


def test_batches_are_cut_to_their_longest_caption():
  rng = np.random.RandomState(0)
  n = 60
  captions = [[" ".join(["w"] * int(rng.randint(1, 30))) for _ in range(5)] for _ in range(n)]
  split = datasets.CaptionSplit(
    "train", images_lib.ArrayImages(np.zeros([n, 4, 4, 3], np.uint8)), np.arange(n), captions
  )
  tok = tokenizer_lib.Tokenizer.build(["w"], vocab_size=10)
  tokens = pipeline.encode_captions(split, tok, max_length=30)  # [60, 5, 32]
  stream = pipeline.TrainStream(split, tokens, batch_size=10, seed=0, length_multiple=8)
  lengths = []
  for step in range(stream.batches_per_epoch):
    batch = stream.batch(step)["tokens"]
    assert batch.shape[1] % 8 == 0 or batch.shape[1] == 32
    assert np.all((batch == tok.end_id).sum(1) == 1)  # every caption keeps its <end>
    lengths.append(batch.shape[1])
  # Grouping by length pays: batches are shorter on average than the full 32 tokens.
  assert np.mean(lengths) < 26
  # Still every pair exactly once per epoch (300 pairs = 30 batches of 10).
  seen = np.concatenate([stream._epoch_plan(0, 0).reshape(-1)])
  assert sorted(seen.tolist()) == list(range(300))
  unbucketed = pipeline.TrainStream(split, tokens, batch_size=10, seed=0, length_multiple=0)
  assert unbucketed.batch(0)["tokens"].shape == (10, 32)


def curriculum_setup():
  # Image i has captions of 1 + (i % 3) * 2 words: 1, 3 or 5.
  n, k = 12, 2
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones([1, 4, 4, 3], np.uint8)
  captions = [[" ".join(["w"] * (1 + (i % 3) * 2))] * k for i in range(n)]
  split = datasets.CaptionSplit("train", images_lib.ArrayImages(images), np.arange(n), captions)
  tok = tokenizer_lib.Tokenizer.build([c for cs in captions for c in cs], vocab_size=10)
  return split, pipeline.encode_captions(split, tok, max_length=6)


def words_of(tokens):
  return (tokens != 0).sum(-1) - 2  # [N, K], without <start> and <end>


def curriculum_stream(split, tokens, steps, batch_size=4, min_words=0, max_words=9):
  """A stream whose curriculum is the generic caption-length one of `datasets.Dataset`."""
  pairs = datasets.Dataset(image_size=32, seed=0).curriculum_pairs(
    split, words_of(tokens), min_words=min_words, max_words=max_words
  )
  return pipeline.TrainStream(
    split,
    tokens,
    batch_size=batch_size,
    seed=0,
    length_multiple=0,
    curriculum_steps=steps,
    curriculum_pairs=pairs,
  )


def test_curriculum_starts_with_short_captions_then_uses_all():
  split, tokens = curriculum_setup()
  stream = curriculum_stream(split, tokens, 5, max_words=3)
  words = lambda batch: (batch["tokens"] != 0).sum(-1) - 2
  early = np.concatenate([words(stream.batch(s)) for s in range(5)])
  assert early.max() <= 3 and set(early) == {1, 3}
  # The 16 short pairs make 4 batches per curriculum epoch, each seen once per epoch.
  ids = sorted(int(i) for s in range(4) for i in stream.batch(s)["image_id"])
  assert ids == sorted(i for i in range(12) if i % 3 != 2 for _ in range(2))
  late = np.concatenate([words(stream.batch(s)) for s in range(5, 11)])
  assert set(late) == {1, 3, 5}
  # After the curriculum the stream is the plain stream, shifted by the curriculum's steps.
  plain = pipeline.TrainStream(split, tokens, batch_size=4, seed=0, length_multiple=0)
  for step in range(6):
    np.testing.assert_array_equal(stream.batch(5 + step)["image_id"], plain.batch(step)["image_id"])
  # A window of lengths: 3-word captions only.
  window = curriculum_stream(split, tokens, 3, min_words=2, max_words=4)
  assert set(np.concatenate([words(window.batch(s)) for s in range(3)])) == {3}
  # Resuming mid-curriculum gives the same batches.
  again = curriculum_stream(split, tokens, 5, max_words=3)
  for step in (3, 9, 1):
    np.testing.assert_array_equal(again.batch(step)["tokens"], stream.batch(step)["tokens"])


def test_curriculum_without_enough_pairs_or_with_bad_bounds_is_reported():
  split, tokens = curriculum_setup()
  with pytest.raises(ValueError, match=r"config\.curriculum"):
    curriculum_stream(split, tokens, 5, batch_size=10, max_words=1)  # 8 one-word captions
  with pytest.raises(ValueError, match=r"config\.curriculum"):
    curriculum_stream(split, tokens, 5, min_words=6, max_words=9)
  with pytest.raises(ValueError, match="min_words and max_words"):
    curriculum_stream(split, tokens, 5, min_words=6, max_words=2)
  with pytest.raises(ValueError, match="curriculum_pairs"):
    pipeline.TrainStream(split, tokens, batch_size=4, seed=0, curriculum_steps=5)


def test_length_buckets_keep_captions_of_different_lengths_mixed():
  # 200 images whose captions are 9 or 10 words long, in one length bucket of 16 tokens:
  # batches mix both lengths instead of holding one length each.
  captions = [[" ".join(["w"] * (9 + (i + j) % 2)) for j in range(2)] for i in range(200)]
  split = datasets.CaptionSplit(
    "train", images_lib.ArrayImages(np.zeros([200, 4, 4, 3], np.uint8)), np.arange(200), captions
  )
  tok = tokenizer_lib.Tokenizer.build(["w"], vocab_size=10)
  tokens = pipeline.encode_captions(split, tok, max_length=12)
  stream = pipeline.TrainStream(split, tokens, batch_size=20, seed=0, length_multiple=16)
  for step in range(5):
    lengths = (stream.batch(step)["tokens"] != 0).sum(-1)
    assert set(lengths) == {11, 12}
