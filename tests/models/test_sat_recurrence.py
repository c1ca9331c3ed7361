"""The fused Show-Attend-Tell recurrence (captioning/models/sat_recurrence.py): the same outputs
and gradients as the step-by-step loop of `keras.layers.LSTMCell`, the attention and the gate,
in float32 (with the compiled attention kernels and without), under mixed precision (with them)
and under XLA (without)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning import kernels
from captioning.models import decoders
from captioning.models import layers
from captioning.models import sat_recurrence

BATCH, LOCATIONS, CHANNELS, STEPS, VOCAB = 3, 5, 6, 6, 11


def make(gate=True, dtype=None):
  """A small decoder whose every weight is random, biases included, so that a gate taken in the
  wrong order or a bias in the wrong place shows."""
  decoder = decoders.build_decoder(
    {
      "name": "sat_lstm",
      "embed_dim": 4,
      "hidden_dim": 7,
      "attention_dim": 8,
      "attention_gate": gate,
    },
    VOCAB,
    dtype=dtype,
  )
  decoder.build((None, LOCATIONS, CHANNELS), (None, None))
  rng = np.random.RandomState(0)
  for variable in decoder.weights:
    variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
  return decoder


def inputs(steps=STEPS, seed=1):
  features = tf.random.stateless_normal([BATCH, LOCATIONS, CHANNELS], seed=[seed, 0])
  tokens = tf.random.stateless_uniform([BATCH, steps], [seed, 1], 0, VOCAB, tf.int32)
  return features, tokens


def loss_and_gradients(decoder, run, features, tokens):
  """A scalar loss over logits, attention and gate (random weights, so that no part of any
  output drops out, e.g. the attention's sum over locations), and its gradients with respect to
  every trainable variable and the features."""
  rng = np.random.RandomState(7)  # numpy: XLA draws other numbers from the same TF seed
  with tf.GradientTape() as tape:
    tape.watch(features)
    outputs = run(features, tokens)
    loss = 0.0
    for key in ("logits", "attention", "gate"):
      weights = tf.constant(rng.normal(size=outputs[key].shape), tf.float32)
      loss += tf.reduce_sum(tf.sin(tf.cast(outputs[key], tf.float32)) * weights)
  gradients = tape.gradient(loss, [*decoder.trainable_variables, features])
  return outputs, [tf.convert_to_tensor(g) for g in gradients]  # the embedding's: dense


def fused(decoder):
  return lambda features, tokens: decoder(features, tokens, training=True)


def loop(decoder):
  # The step-by-step path `step` takes; called directly, so cast as `__call__` would.
  return lambda features, tokens: decoder._call_loop(
    tf.cast(features, decoder.compute_dtype), tokens, training=True
  )


def assert_close(actual, expected, tolerance, name=""):
  """Close relative to the largest magnitude of `expected` (gradients of different variables
  differ by orders of magnitude; each is compared at its own scale)."""
  actual = tf.convert_to_tensor(actual)
  expected = tf.convert_to_tensor(expected)
  assert actual.shape == expected.shape, name
  actual, expected = (tf.cast(x, tf.float64).numpy() for x in (actual, expected))
  scale = max(np.abs(expected).max(), 1e-3)
  np.testing.assert_allclose(actual / scale, expected / scale, atol=tolerance, err_msg=name)


def compare(decoder, run_fused, run_loop, tolerance, compile_fused=None, steps=STEPS):
  """Compares outputs and gradients; `compile_fused` wraps the fused forward and backward."""
  features, tokens = inputs(steps)
  fused_step = lambda features, tokens: loss_and_gradients(decoder, run_fused, features, tokens)
  outputs, gradients = (compile_fused or (lambda f: f))(fused_step)(features, tokens)
  expected_outputs, expected_gradients = loss_and_gradients(decoder, run_loop, features, tokens)
  for key, expected in expected_outputs.items():
    assert outputs[key].dtype == expected.dtype, key
    assert_close(outputs[key], expected, tolerance, key)
  names = [v.path for v in decoder.trainable_variables] + ["features"]
  for name, actual, expected in zip(names, gradients, expected_gradients):
    assert actual is not None, name
    if name.endswith("score/bias"):
      # It shifts all scores alike, which the softmax ignores: its gradient is zero (the
      # loop's autodiff gives rounding noise).
      np.testing.assert_array_equal(actual.numpy(), 0.0)
      continue
    assert_close(actual, expected, tolerance, name)
  return gradients


@pytest.mark.parametrize("attention_kernels", [True, False])
@pytest.mark.parametrize("gate", [True, False])
def test_fused_equals_the_step_loop_in_float32(gate, attention_kernels):
  decoder = make(gate)
  # Where the kernels cannot build this runs TensorFlow's ops twice; the next test asserts that
  # they build wherever a compiler is found.
  decoder.attention_kernels = attention_kernels
  compare(decoder, fused(decoder), loop(decoder), 1e-5)


def kernel_ops_traced(decoder, jit_compile=False):
  """The compiled attention ops in the graph of the decoder's forward and backward pass."""
  features, tokens = inputs()
  step = lambda features, tokens: loss_and_gradients(decoder, fused(decoder), features, tokens)
  graph = tf.function(step, jit_compile=jit_compile).get_concrete_function(features, tokens).graph
  return sorted({op.type for op in graph.get_operations() if op.type.startswith("Captioning")})


def test_the_attention_kernels_run_on_cpu_except_under_xla():
  try:
    kernels._compiler()
  except kernels.BuildError as e:
    pytest.skip(str(e))  # the float32 and bfloat16 tests cover the TensorFlow-ops path
  assert kernels.cpu_attention_ops() is not None  # no GPU here, and the kernels build
  decoder = make()
  assert decoder.attention_ops() is kernels.cpu_attention_ops()
  assert kernel_ops_traced(decoder) == [
    "CaptioningAttentionProjectedGrad",
    "CaptioningAttentionScores",
    "CaptioningAttentionScoresGrad",
  ]
  assert kernel_ops_traced(decoder, jit_compile=True) == []  # XLA has no kernel for them
  assert len(kernel_ops_traced(make(dtype="mixed_bfloat16"))) == 3  # that work is float32
  assert kernel_ops_traced(make(dtype="float64")) == []  # float32 kernels only
  decoder.attention_kernels = False
  assert decoder.attention_ops() is None
  assert kernel_ops_traced(decoder) == []


def test_recurrence_is_that_of_keras_lstm_cell_attention_and_gate():
  """`sat_recurrence.recurrence` on its own against the Keras layers it reads the weights of,
  run step by step: the LSTM's gate order (i, f, g, o), bias and activations, the attention and
  the gate. Every weight is random, the forget-gate bias included."""
  rng = np.random.RandomState(5)
  embed, hidden, units = 4, 7, 8
  cell = keras.layers.LSTMCell(hidden)
  cell.build((None, embed + CHANNELS))
  attention = layers.AdditiveAttention(units)
  attention.build((None, LOCATIONS, CHANNELS), (None, hidden))
  gate = keras.layers.Dense(1, activation="sigmoid")
  gate.build((None, hidden))
  for layer in (cell, attention, gate):
    for variable in layer.weights:
      variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
  normal = lambda *shape: tf.constant(rng.normal(size=shape), tf.float32)
  embedded, features = normal(BATCH, STEPS, embed), normal(BATCH, LOCATIONS, CHANNELS)
  h, c = normal(BATCH, hidden), normal(BATCH, hidden)
  projected = attention.precompute(features)
  value = lambda variable: tf.convert_to_tensor(variable)
  actual = sat_recurrence.recurrence(
    embedded,
    features,
    h,
    c,
    lstm=(value(cell.kernel), value(cell.recurrent_kernel), value(cell.bias)),
    attention=[
      value(v)
      for layer in (attention.feature_dense, attention.state_dense, attention.score_dense)
      for v in layer.weights
    ],
    gate=(value(gate.kernel), value(gate.bias)),
  )
  expected = [[], [], [], []]  # H, Z, alpha, beta
  for t in range(STEPS):
    context, alpha = attention(features, h, projected_features=projected)
    beta = gate(h)
    h, (h, c) = cell(tf.concat([embedded[:, t], beta * context], -1), [h, c])
    for outputs, x in zip(expected, (h, beta * context, alpha, beta[:, 0])):
      outputs.append(x)
  for a, b in zip(actual, expected):
    np.testing.assert_allclose(a.numpy(), tf.stack(b, 1).numpy(), atol=1e-5)


def test_fused_is_as_accurate_as_the_step_loop_under_mixed_bfloat16():
  """Both bfloat16 paths are compared with the float32 result of the same weights: each output
  and gradient of the fused path is within bfloat16 noise of it, and no less accurate overall
  than the loop's (their rounding differs, so they are not compared with each other)."""
  exact, mixed = make(), make(dtype="mixed_bfloat16")
  features, tokens = inputs()

  def results(decoder, run):
    outputs, gradients = loss_and_gradients(decoder, run, features, tokens)
    names = [*outputs, *(v.path for v in decoder.trainable_variables), "features"]
    values = [*outputs.values(), *gradients]
    return {n: tf.cast(tf.convert_to_tensor(x), tf.float64).numpy() for n, x in zip(names, values)}

  truth = results(exact, loop(exact))
  errors = {}
  for path, run in (("fused", fused(mixed)), ("loop", loop(mixed))):
    values = results(mixed, run)
    errors[path] = {
      name: np.linalg.norm(values[name] - expected) / max(np.linalg.norm(expected), 1e-3)
      for name, expected in truth.items()
      if not name.endswith("score/bias")  # zero, see above
    }
  assert max(errors["fused"].values()) < 0.1, errors["fused"]
  assert sum(errors["fused"].values()) < 1.5 * sum(errors["loop"].values()), errors
  _, gradients = loss_and_gradients(mixed, fused(mixed), features, tokens)
  for variable, gradient in zip(mixed.trainable_variables, gradients):
    assert variable.dtype == gradient.dtype == tf.float32, variable.path


def test_fused_equals_the_step_loop_under_xla():
  decoder = make()
  compare(decoder, fused(decoder), loop(decoder), 1e-4, tf.function(jit_compile=True))


def test_one_step():
  decoder = make()
  compare(decoder, fused(decoder), loop(decoder), 1e-5, steps=1)


def test_coverage_keeps_the_loop(monkeypatch):
  def unused(*args, **kwargs):
    raise AssertionError("the fused recurrence has no coverage")

  monkeypatch.setattr(decoders.sat_recurrence, "recurrence", unused)
  decoder = decoders.build_decoder(
    {
      "name": "sat_lstm",
      "embed_dim": 4,
      "hidden_dim": 7,
      "attention_dim": 8,
      "attention_coverage": True,
    },
    VOCAB,
  )
  features, tokens = inputs()
  assert decoder.attention_ops() is None  # the kernels are the fused recurrence's
  assert decoder(features, tokens)["logits"].shape == (BATCH, STEPS, VOCAB)
  with pytest.raises(AssertionError, match="no coverage"):
    make()(features, tokens)
