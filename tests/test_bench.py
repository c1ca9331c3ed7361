"""The benchmark suite's parts: the FLOP counter, the peak, the tutorial-style baseline's loss
(equal to the project's on the same weights and batch), and each kind of job end to end at a
tiny size."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import bench_job
from benchmarks import flops
from benchmarks import goals
from benchmarks import peak
from benchmarks import rounds
from benchmarks import tutorial_steps
from captioning import experiment
from captioning import losses

# sat_tutorial_size shrunk: MobileNetV3Small's 7x7x576 grid (cheaper to build than ResNet50),
# a small decoder, short captions.
TINY_SAT = {
  "model.encoder.name": "mobilenet_v3_small",
  "data.image_size": 224,
  "data.max_caption_length": 4,
  "model.decoder.embed_dim": 8,
  "model.decoder.hidden_dim": 12,
  "model.decoder.attention_dim": 10,
  "model.decoder.dropout": 0.0,
  "train.batch_size": 4,
}
TINY_TRANSFORMER = {
  "data.max_caption_length": 4,
  "model.decoder.width": 16,
  "model.decoder.mlp_dim": 32,
  "model.decoder.dropout": 0.0,
  "train.batch_size": 4,
}


def test_flops_count_each_kind_of_product_exactly():
  def fn(a, b, x, images):
    matmul = tf.matmul(a, b, transpose_b=True)  # [3, 5] x [7, 5]^T
    batched = tf.matmul(x, x, transpose_b=True)  # [2, 4, 6] x [2, 6, 4]
    einsum = tf.einsum("btc,cd->btd", x, tf.ones([6, 9]))
    conv = tf.nn.conv2d(images, tf.ones([3, 3, 2, 5]), strides=1, padding="SAME")
    return matmul, batched, einsum, conv

  counts = flops.matmul_flops(
    fn,
    tf.TensorSpec([3, 5]),
    tf.TensorSpec([7, 5]),
    tf.TensorSpec([2, 4, 6]),
    tf.TensorSpec([1, 8, 8, 2]),
  )
  assert counts["MatMul"] == 2 * 3 * 7 * 5
  assert counts["BatchMatMulV2"] == 2 * 2 * 4 * 4 * 6
  assert counts["Einsum"] == 2 * 2 * 4 * 6 * 9
  assert counts["Conv2D"] == 2 * (8 * 8 * 5) * 3 * 3 * 2
  assert flops.total(counts) == sum(counts.values())


def test_flops_refuse_a_loop_whose_trip_count_they_cannot_know():
  def loop(x):
    return tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.matmul(y, y)), (0, x))[1]

  with pytest.raises(ValueError, match="loop"):
    flops.matmul_flops(loop, tf.TensorSpec([4, 4]))


def test_the_peak_is_a_best_rate_of_timed_runs():
  result = peak.matmul_peak(sizes=(64, 128), repeats=2, min_seconds=0.01)
  assert len(result["runs"]) == 4 and result["size"] in (64, 128)
  assert result["gflops"] == max(run["gflops"] for run in result["runs"]) > 0
  assert all(run["seconds"] >= 0.01 for run in result["runs"])


def test_the_baseline_computes_the_project_loss_on_the_same_weights_and_batch():
  config = bench_job.load_config("sat_tutorial_size", overrides=TINY_SAT)
  model = experiment.build_model(config, 30)
  loss_fn = losses.CaptionLoss(**config.loss)
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 30, (3, 7)).astype(np.int32)
  tokens[:, 0], tokens[0, 4:] = 1, 0  # one caption padded
  batch = {
    "features": tf.constant(rng.standard_normal((3, 7, 7, 576)), tf.float32),
    "tokens": tf.constant(tokens),
  }
  step = tutorial_steps.baseline_step(model, keras_adam(), loss_fn, pad_id=0)
  out = model({"features": batch["features"], "tokens": batch["tokens"][:, :-1]}, training=True)
  expected, _ = loss_fn(batch["tokens"][:, 1:], out, batch["tokens"][:, 1:] != 0)
  assert loss_fn.doubly_stochastic_weight > 0  # the penalty counts too
  np.testing.assert_allclose(float(step.loss(batch)), float(expected), rtol=1e-5)


def test_model_flops_are_the_step_by_step_maths_not_the_fused_recurrence():
  config = bench_job.load_config("sat_tutorial_size", overrides=TINY_SAT)
  model = experiment.build_model(config, 30)
  counted = bench_job._project_forward_flops(model, "features", (7, 7, 576), 5)
  assert model.decoder.fused_recurrence  # put back

  def count(fused):
    model.decoder.fused_recurrence = fused
    return flops.total(
      flops.matmul_flops(
        lambda f, t: model({"features": f, "tokens": t})["logits"],
        tf.TensorSpec([1, 7, 7, 576]),
        tf.TensorSpec([1, 4], tf.int32),
      )
    )

  # G = f W_z for 49 locations costs more than 4 steps' context products.
  assert counted == count(False) < count(True)


def keras_adam():
  import keras  # pylint: disable=import-outside-toplevel

  return keras.optimizers.Adam(1e-3)


@pytest.mark.parametrize(
  "config, kind, overrides",
  [
    ("sat_tutorial_size", "project", TINY_SAT),
    ("sat_tutorial_size", "baseline", TINY_SAT),
    ("sat_tutorial_size", "tutorial_port", TINY_SAT),
    ("transformer_tutorial_size", "project", TINY_TRANSFORMER),
  ],
)
def test_a_job_reports_its_rate_flops_and_memory(config, kind, overrides):
  job = {
    "config": config,
    "kind": kind,
    "precision": "float32",
    "jit": False,
    "windows": 2,
    "window_seconds": 0.05,
    "overrides": overrides,
    "vocab_size": 30,
  }
  result = bench_job.run(job)
  assert result["train_examples_per_sec"] > 0 and result["step_seconds"] > 0
  assert len(result["window_examples_per_sec"]) == 2
  assert result["train_flops_per_example"] == 3 * result["forward_flops_per_example"] > 0
  assert result["input_pipeline_examples_per_sec"] > 0
  assert result["peak_host_memory_mb"] > 0
  if kind == "tutorial_port":  # W1(features) at every step is not useful work
    assert 0 < result["useful_train_flops_per_example"] < result["train_flops_per_example"]


def test_ratios_pair_the_rounds_and_take_their_median():
  sat = {"config": "sat_tutorial_size", "kind": "project", "precision": "float32", "jit": False}
  port = {**sat, "kind": "tutorial_port"}
  base = {**sat, "kind": "baseline"}
  other = {**sat, "config": "shapes_sat"}
  assert rounds.schedule([other, sat, base, port], 3) == [other, sat, base, port] + [sat, port] * 2
  rate = lambda r: {"train_examples_per_sec": r}
  runs = {
    rounds.name(sat): [rate(90.0), rate(100.0), rate(110.0)],
    rounds.name(port): [rate(60.0), rate(80.0), rate(55.0)],
    rounds.name(base): [rate(30.0)],
  }
  # Same-round ratios 1.5, 1.25, 2.0: the median is 1.5 (not 100 / 60 from the medians).
  assert rounds.ratio(runs, rounds.name(sat), rounds.name(port)) == 1.5
  assert rounds.ratio(runs, rounds.name(sat), rounds.name(base)) == 3.0  # round 1 only
  chosen = rounds.median_round(runs[rounds.name(port)] + [{"error": "crashed"}])
  assert chosen["train_examples_per_sec"] == 60.0
  assert chosen["round_examples_per_sec"] == [60.0, 80.0, 55.0]


def test_the_bf16_goal_applies_only_where_bf16_matmuls_are_faster_than_float32():
  measured = {
    "sat_tutorial_size_fp32_over_baseline": 4.5,
    "sat_tutorial_size_fp32_over_tutorial": 1.4,
    "sat_tutorial_size_bf16_over_tutorial": 1.9,
  }
  native = goals.status(measured, peak_float32=500.0, peak_bfloat16=900.0)
  assert native["sat_tutorial_size_fp32_over_baseline"] == {
    "goal": 3.0,
    "measured": 4.5,
    "met": True,
  }
  assert native["sat_tutorial_size_fp32_over_tutorial"]["met"] is False
  assert native["sat_tutorial_size_bf16_over_tutorial"]["met"] is False
  assert native["transformer_tutorial_size_mfu_float32"]["met"] is None  # not run
  slow = goals.status(measured, peak_float32=300.0, peak_bfloat16=160.0)
  assert slow["sat_tutorial_size_bf16_over_tutorial"]["met"] == "not applicable"
  assert "0.53x" in slow["sat_tutorial_size_bf16_over_tutorial"]["why"]
  assert slow["sat_tutorial_size_bf16_over_tutorial"]["measured"] == 1.9  # still reported
  assert slow["sat_tutorial_size_fp32_over_tutorial"]["met"] is False
