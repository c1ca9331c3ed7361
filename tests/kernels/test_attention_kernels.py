"""The compiled attention kernels (captioning/kernels): the numbers of the TensorFlow ops they
replace, clear errors for shapes that do not fit, a build cached by what it depends on, and a
fallback to TensorFlow ops with a logged reason where they cannot be built."""

import os

import numpy as np
import pytest
import tensorflow as tf

from captioning import kernels


@pytest.fixture(scope="module")
def ops():
  try:
    kernels._compiler()
  except kernels.BuildError as e:
    pytest.skip(str(e))  # a machine without a compiler: the fallback below still runs
  built = kernels.attention_ops()
  assert built is not None, "the kernels should build where a compiler is found (see the log)"
  return built


# An odd width (not a multiple of the vector length) and a batch the threads split unevenly.
BATCH, LOCATIONS, UNITS, STEPS = 5, 7, 37, 4


def random(*shape, seed):
  return tf.constant(np.random.RandomState(seed).normal(size=shape), tf.float32)


def reference_scores(projected, state, v):
  s = tf.tanh(projected + state[:, tf.newaxis, :])
  return tf.einsum("bla,a->bl", s, v)


def test_scores_and_their_gradients_are_those_of_tensorflow_ops(ops):
  projected = random(BATCH, LOCATIONS, UNITS, seed=0)
  states = random(STEPS, BATCH, UNITS, seed=1)
  v = random(UNITS, seed=2)
  d_scores = random(STEPS, BATCH, LOCATIONS, seed=3)
  d_projected_expected = tf.zeros_like(projected)
  d_v_expected = tf.zeros_like(v)
  for t in range(STEPS):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch([projected, states, v])
      expected = reference_scores(projected, states[t], v)
      loss = tf.reduce_sum(expected * d_scores[t])
    np.testing.assert_allclose(
      ops.captioning_attention_scores(projected, states[t], v), expected, rtol=1e-5, atol=1e-5
    )
    d_state, d_p, d_v = tape.gradient(loss, [states, projected, v])
    np.testing.assert_allclose(
      ops.captioning_attention_scores_grad(projected, states[t], v, d_scores[t]),
      d_state[t],
      rtol=1e-5,
      atol=1e-5,
    )
    d_projected_expected += d_p
    d_v_expected += d_v
  d_projected, d_v = ops.captioning_attention_projected_grad(projected, states, v, d_scores)
  np.testing.assert_allclose(d_projected, d_projected_expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_v, d_v_expected, rtol=1e-5, atol=1e-4)
  again = ops.captioning_attention_projected_grad(projected, states, v, d_scores)
  np.testing.assert_array_equal(again[1], d_v)  # a fixed order of summation


def test_shapes_that_do_not_fit_are_a_clear_error(ops):
  projected = random(BATCH, LOCATIONS, UNITS, seed=0)
  v = random(UNITS, seed=2)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected projected \[B, L, A\]"):
    ops.captioning_attention_scores(projected, random(BATCH, UNITS + 1, seed=1), v)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"score gradients \[B, L\]"):
    ops.captioning_attention_scores_grad(
      projected, random(BATCH, UNITS, seed=1), v, random(BATCH, LOCATIONS + 1, seed=3)
    )
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"score gradients \[T, B, L\]"):
    ops.captioning_attention_projected_grad(
      projected, random(STEPS, BATCH, UNITS, seed=1), v, random(STEPS + 1, BATCH, LOCATIONS, seed=3)
    )


def test_a_build_is_cached_under_a_key_of_what_it_depends_on(ops, tmp_path):
  source = tmp_path / "tiny_op.cc"
  source.write_text('#include "tensorflow/core/framework/op.h"\n')
  first = kernels.build(str(source), output_dir=str(tmp_path / "cache"))
  built_at = os.stat(first).st_mtime_ns
  assert kernels.build(str(source), output_dir=str(tmp_path / "cache")) == first
  assert os.stat(first).st_mtime_ns == built_at  # loaded from the cache, not built again
  source.write_text('#include "tensorflow/core/framework/op.h"\n// changed\n')
  assert kernels.build(str(source), output_dir=str(tmp_path / "cache")) != first


def test_without_a_working_compiler_the_recurrence_falls_back_with_a_reason(
  monkeypatch, tmp_path, caplog
):
  monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
  monkeypatch.setenv("CAPTIONING_KERNEL_CACHE", str(tmp_path))
  with pytest.raises(kernels.BuildError, match="could not compile"):
    kernels.build()
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  with pytest.raises(kernels.BuildError, match="failed to run"):
    kernels.build()
  assert not list(tmp_path.rglob("*.so"))  # no half-built library left behind
  with caplog.at_level("WARNING"):
    assert kernels.attention_ops.__wrapped__() is None  # uncached: this environment's answer
  assert "runs on TensorFlow ops" in caplog.text
