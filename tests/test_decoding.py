"""Greedy decoding: in-graph and batched, with honest handling of captions that never end."""

import numpy as np
import tensorflow as tf

from captioning import decoding
from captioning.models import captioner

END, PAD, START = 2, 0, 1


def model_that_says(words_then_end, vocab=12):
  """A captioner whose output bias forces a fixed word sequence regardless of the image."""
  model = captioner.Captioner(vocab_size=vocab, encoder_widths=(4,), encoder_strides=(2,), embed_dim=8, hidden_dim=8,
                              attention_dim=4)
  model.build({"image": (None, 32, 32, 3), "tokens": (None, None)})
  # Zero every logit weight and make the bias depend on the previous word via the embedding:
  # simplest is a bias favouring one word, so greedy repeats it.
  model.decoder.logits.kernel.assign(tf.zeros_like(model.decoder.logits.kernel))
  bias = np.full([vocab], -10.0, np.float32)
  bias[words_then_end] = 10.0
  model.decoder.logits.bias.assign(bias)
  return model


def test_batched_decode_shapes_and_attention():
  model = model_that_says(5)
  decoder = decoding.GreedyDecoder(model, max_length=6, start_id=START, end_id=END)
  images = np.random.RandomState(0).randint(0, 255, (3, 32, 32, 3)).astype("uint8")
  out = decoder(images)
  assert out["tokens"].shape == (3, 7)
  assert out["attention"].shape == (3, 7, 256)
  np.testing.assert_allclose(out["attention"].numpy().sum(-1), 1.0, atol=1e-5)


def test_caption_that_never_ends_is_reported_unfinished():
  model = model_that_says(5)  # always word 5, never <end>
  decoder = decoding.GreedyDecoder(model, max_length=4, start_id=START, end_id=END)
  out = decoder(np.zeros([2, 32, 32, 3], np.uint8))
  np.testing.assert_array_equal(out["tokens"].numpy(), [[5, 5, 5, 5, PAD]] * 2)
  assert not out["finished"].numpy().any()


def test_caption_that_ends_stops_and_pads():
  model = model_that_says(END)
  decoder = decoding.GreedyDecoder(model, max_length=4, start_id=START, end_id=END)
  out = decoder(np.zeros([2, 32, 32, 3], np.uint8))
  np.testing.assert_array_equal(out["tokens"].numpy(), [[END, PAD, PAD, PAD, PAD]] * 2)
  assert out["finished"].numpy().all()
  assert np.all(out["attention"].numpy()[:, 1:] == 0)  # nothing attended after <end>


def test_greedy_matches_step_by_step_argmax():
  model = captioner.Captioner(vocab_size=15, encoder_widths=(8,), encoder_strides=(2,), embed_dim=8, hidden_dim=16,
                              attention_dim=8)
  model.build({"image": (None, 32, 32, 3), "tokens": (None, None)})
  images = np.random.RandomState(1).randint(0, 255, (4, 32, 32, 3)).astype("uint8")
  out = decoding.GreedyDecoder(model, max_length=5, start_id=START, end_id=END)(images)
  # Re-score the decoded prefix with teacher forcing: each emitted word is the argmax.
  tokens = out["tokens"].numpy()
  inputs = np.concatenate([np.full([4, 1], START), tokens[:, :-1]], 1).astype("int32")
  logits = model({"image": images, "tokens": inputs})["logits"].numpy()
  for b in range(4):
    for t in range(5):
      if t > 0 and tokens[b, t - 1] in (END, PAD):
        break
      assert tokens[b, t] == logits[b, t].argmax()
