"""The compiled attention kernels (captioning/kernels): the numbers of the TensorFlow ops they
replace, clear errors for shapes that do not fit, a build cached by what it depends on, and a
fallback to TensorFlow ops with a logged reason where they cannot be built."""

import concurrent.futures
import os

import numpy as np
import pytest
import tensorflow as tf

from captioning import kernels
import helpers


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


# Each kernel's rows are split among the op's threads; v's gradient is summed per image and the
# images' sums added in order, so the results do not depend on the number of threads.
THREADS_SCRIPT = """
import hashlib, json, sys
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
from captioning import kernels
ops = kernels.attention_ops()
rng = np.random.RandomState(0)
p, a, v = (rng.normal(size=s).astype("float32") for s in ([16, 64, 512], [8, 16, 512], [512]))
d = rng.normal(size=[8, 16, 64]).astype("float32")
outputs = [
  ops.captioning_attention_scores(p, a[0], v),
  ops.captioning_attention_scores_grad(p, a[0], v, d[0]),
  *ops.captioning_attention_projected_grad(p, a, v, d),
]
print(json.dumps([hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in outputs]))
"""


def test_results_do_not_depend_on_the_number_of_threads(ops):
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    one, four = pool.map(lambda n: helpers.run_json_script(THREADS_SCRIPT, n), (1, 4))
  assert one == four


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
  assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no partial library left behind
  with caplog.at_level("WARNING"):
    assert kernels._attention_ops.__wrapped__() is None  # uncached: this environment's answer
  assert "runs on TensorFlow ops" in caplog.text


def test_a_cache_folder_that_cannot_be_written_means_tensorflow_ops(ops, monkeypatch, tmp_path):
  (tmp_path / "a_file").write_text("")
  monkeypatch.setenv("CAPTIONING_KERNEL_CACHE", str(tmp_path / "a_file" / "cache"))
  assert kernels._attention_ops.__wrapped__() is None


def test_a_cached_library_that_does_not_load_is_built_again(ops, tmp_path, caplog):
  source = tmp_path / "tiny_op.cc"
  source.write_text('#include "tensorflow/core/framework/op.h"\n')
  library = kernels.build(str(source), output_dir=str(tmp_path))
  with open(library, "wb") as f:
    f.write(b"not a library")  # e.g. a disk that filled up
  with caplog.at_level("WARNING"):
    kernels.load(str(source), output_dir=str(tmp_path))
  assert "building it again" in caplog.text
  assert os.path.getsize(library) > 1000


def test_no_kernels_where_a_gpu_is_visible(ops, monkeypatch):
  monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/GPU:0"])
  assert kernels.cpu_attention_ops() is None
