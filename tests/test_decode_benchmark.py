"""benchmarks/decode.py: its per-image Python loops decode as `decoding.Search` does, and the
benchmark runs end to end on a tiny config."""

import json
import os
import sys

from absl import flags
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import decode
from benchmarks import loop_decoders
from captioning import decoding
import helpers

MAX_LENGTH = 8


class Ids:
  start_id, end_id, pad_id = 1, 2, 0


TRANSFORMER = dict(
  name="transformer",
  num_layers=1,
  width=16,
  num_heads=2,
  mlp_dim=16,
  dropout=0.0,
  max_length=MAX_LENGTH + 2,
  tie_embeddings=False,
)


def batched(model, images, method, beam_size):
  """The search's captions of `images`, as the benchmark reads them."""
  search = decoding.Search(model, Ids(), method=method, max_length=MAX_LENGTH, beam_size=beam_size)
  out = {k: v.numpy() for k, v in search(images).items()}
  return decode._captions(out, Ids())


# Seed 1's SAT model ends some captions and not others; the Transformer ends none.
@pytest.mark.parametrize("seed,decoder", [(1, None), (0, TRANSFORMER)], ids=["sat", "transformer"])
def test_loops_find_the_captions_of_the_batched_search(seed, decoder):
  keras.utils.set_random_seed(seed)
  model = helpers.tiny_captioner(20, decoder=decoder)
  images = np.random.RandomState(seed).randint(0, 255, (6, 32, 32, 3)).astype("uint8")
  greedy, beam = batched(model, images, "greedy", 1), batched(model, images, "beam", 5)
  if decoder is None:  # both kinds of caption are compared
    assert {finished for _, finished, _ in greedy} == {True, False}
  for i in range(len(images)):
    image = {"image": images[i : i + 1]}
    out = loop_decoders.loop_greedy(model, Ids(), image, MAX_LENGTH)
    assert (out["tokens"], out["finished"]) == tuple(greedy[i][:2])
    np.testing.assert_allclose(out["log_prob"], greedy[i][2], rtol=1e-5)
    # The loop ran one step per word, and one for <end> (or for the step that could not end).
    assert out["steps"] == (len(out["tokens"]) if out["finished"] else MAX_LENGTH + 1)

    out = loop_decoders.loop_beam(model, Ids(), image, MAX_LENGTH, 5)
    if out["tokens"] != beam[i][0]:  # only where two captions' scores (nearly) tie
      assert out["log_prob"] >= beam[i][2] - 1e-4
    assert out["finished"] == (out["tokens"][-1:] == [Ids.end_id])
    assert 1 <= out["steps"] <= MAX_LENGTH + 1


def test_loops_cut_a_caption_that_never_ends():
  model = helpers.tiny_captioner(12)
  # Word 5 is always the likeliest, whatever came before: the caption never ends.
  model.decoder.logits.kernel.assign(tf.zeros_like(model.decoder.logits.kernel))
  model.decoder.logits.bias.assign(np.where(np.arange(12) == 5, 10.0, -10.0).astype("float32"))
  image = {"image": np.zeros([1, 32, 32, 3], np.uint8)}
  for out in (
    loop_decoders.loop_greedy(model, Ids(), image, 4),
    loop_decoders.loop_beam(model, Ids(), image, 4, 3),
  ):
    assert out["tokens"] == [5, 5, 5, 5]
    assert not out["finished"]
    assert out["steps"] == 5


def test_benchmark_runs_end_to_end(tmp_path, monkeypatch):
  output = tmp_path / "decode.json"
  argv = [
    "decode.py",
    f"--config={os.path.join(helpers.ROOT, 'configs', 'smoke.py')}",
    "--config.data.num_train=100",
    "--config.eval.num_examples=8",
    "--config.decode.max_length=6",
    "--num_images=3",
    "--batch_size=2",
    "--repeats=1",
    f"--output={output}",
  ]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags finds the --config.x overrides there
  flags.FLAGS(argv)
  try:
    decode.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
  result = json.loads(output.read_text())
  names = ["loop_greedy", "loop_beam5", "greedy_batch2", "beam3_batch2", "beam5_batch2"]
  assert sorted(result["captions_per_sec"]) == sorted(names)
  assert all(rate > 0 for rate in result["captions_per_sec"].values())
  assert set(result["ratios"]) == {
    "beam5_batch2_over_loop_beam5",
    "greedy_batch2_over_loop_greedy",
    "beam5_batch2_over_loop_greedy",
  }
  assert result["agreement_with_loops"]["greedy_batch2_vs_loop_greedy"]["same_tokens"] == 1.0
  variants = result["variants"]
  assert variants["loop_greedy"]["captions_per_run"] == 3
  assert variants["greedy_batch2"]["captions_per_run"] == 4  # two batches of two
  for name in names:
    entry = variants[name]
    steps = entry.get("decoder_steps_per_batch", entry.get("decoder_steps_per_image"))
    assert 1 <= entry["mean_caption_steps"] <= 7
    assert 1 <= steps <= 7  # max_length + 1 at most
  assert result["machine"]["cpu_count"] == os.cpu_count()
  assert result["config"].endswith("smoke.py")
