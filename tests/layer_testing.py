"""One contract for every layer of the project (keras-hub's `run_layer_test`, in miniature).

`check_layer` builds a layer from its constructor arguments and checks, on the given inputs:
  - output shapes (and `compute_output_shape`, where the layer has one);
  - a serialisation round trip: same config, same outputs with the same weights;
  - a `.keras` file round trip of the layer inside a functional model (Keras tensors in, so the
    layer's raw TF ops must live inside `call`);
  - a gradient step: every trainable variable gets a finite gradient and one SGD step lowers a
    loss on the outputs;
  - a mixed-precision round trip: under "mixed_bfloat16" the variables stay float32, the outputs
    are finite and close to float32's, and the policy survives serialisation.

The project's own helper, not `keras.src.testing`: private Keras modules move between releases.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf


def _floating(outputs):
  """The floating-point tensors of a layer's output structure, in a fixed order."""
  return [t for t in tf.nest.flatten(outputs) if t is not None and t.dtype.is_floating]


def _call(layer, args, kwargs):
  return layer(*args, **kwargs)


def _copy_weights(src, dst):
  assert len(src.weights) == len(dst.weights), (len(src.weights), len(dst.weights))
  for a, b in zip(src.weights, dst.weights):
    b.assign(a)


def _assert_outputs_equal(expected, actual, atol):
  expected, actual = _floating(expected), _floating(actual)
  assert len(expected) == len(actual)
  for a, b in zip(expected, actual):
    np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32), atol=atol)


def _shapes(outputs):
  return tf.nest.map_structure(lambda t: tuple(t.shape), outputs)


def _shape_list(shapes):
  """A shape (tuple of sizes) or a structure of them -> a flat list of shape tuples."""
  if isinstance(shapes, dict):
    return [s for key in sorted(shapes) for s in _shape_list(shapes[key])]
  shapes = tuple(shapes)
  if all(size is None or isinstance(size, int) for size in shapes):
    return [shapes]
  return [s for shape in shapes for s in _shape_list(shape)]


def check_shapes(layer, outputs, args, expected_shapes):
  """Output shapes equal `expected_shapes` (a structure like the outputs), and so does
  `compute_output_shape` where the layer defines one."""
  if expected_shapes is not None:
    assert _shapes(outputs) == expected_shapes, (_shapes(outputs), expected_shapes)
  if "compute_output_shape" in type(layer).__dict__:
    static = layer.compute_output_shape(*[tuple(a.shape) for a in args])
    actual, static = _shape_list(_shapes(outputs)), _shape_list(static)
    assert len(static) == len(actual), (static, actual)
    for want, got in zip(static, actual):
      # A static shape may leave the batch (or any size) unknown.
      assert len(want) == len(got) and all(w in (None, g) for w, g in zip(want, got)), (
        static,
        actual,
      )


def check_serialization(cls, args, kwargs, layer, expected, atol=1e-6):
  """serialize -> deserialize gives the same config and, with the same weights, the same outputs."""
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert isinstance(restored, cls)
  assert restored.get_config() == layer.get_config()
  if not restored.built:
    _call(restored, args, kwargs)
  _copy_weights(layer, restored)
  _assert_outputs_equal(expected, _call(restored, args, kwargs), atol)
  # The constructor arguments are all in the config, so a config rebuilds the same layer.
  assert cls.from_config(layer.get_config()).get_config() == layer.get_config()


def check_keras_file(layer, args, expected, atol=1e-5):
  """The layer inside a functional model survives `model.save` / `keras.saving.load_model`."""
  inputs = [keras.Input(batch_shape=(None, *a.shape[1:]), dtype=a.dtype.name) for a in args]
  model = keras.Model(inputs, layer(*inputs))
  _copy_weights(layer, model.get_layer(layer.name))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "layer.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
  _assert_outputs_equal(
    expected, restored(list(args)) if len(args) > 1 else restored(args[0]), atol
  )


def check_gradient_step(layer, args, kwargs):
  """A loss on the outputs reaches every trainable variable, finitely, and one SGD step on it
  lowers the loss."""
  train_kwargs = dict(kwargs)

  def loss_fn():
    outputs = _floating(_call(layer, args, train_kwargs))
    return tf.add_n([tf.reduce_mean(tf.square(tf.cast(t, tf.float32) - 0.5)) for t in outputs])

  variables = layer.trainable_variables
  assert variables, "nothing to train"
  with tf.GradientTape() as tape:
    loss = loss_fn()
  grads = tape.gradient(loss, variables)
  missing = [v.path for v, g in zip(variables, grads) if g is None]
  assert not missing, f"no gradient reaches {missing}"
  for v, g in zip(variables, grads):
    assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy())), v.path
  # A small step, so that the first-order decrease dominates whatever the curvature.
  keras.optimizers.SGD(1e-3).apply(grads, variables)
  assert float(loss_fn()) < float(loss)


def check_mixed_precision(cls, init_kwargs, args, kwargs, layer, expected, tolerance):
  """Under "mixed_bfloat16" the variables stay float32, outputs are finite and near float32's,
  and the policy survives serialisation."""
  mixed = cls(**init_kwargs, dtype="mixed_bfloat16")
  outputs = _call(mixed, args, kwargs)
  _copy_weights(layer, mixed)
  outputs = _call(mixed, args, kwargs)
  for variable in mixed.weights:
    if "float" in str(variable.dtype):
      assert variable.dtype == "float32", variable.path
  for a, b in zip(_floating(expected), _floating(outputs)):
    b = np.asarray(tf.cast(b, tf.float32))
    assert np.all(np.isfinite(b))
    np.testing.assert_allclose(b, np.asarray(a), atol=tolerance, rtol=tolerance)
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(mixed))
  assert restored.dtype_policy.name == "mixed_bfloat16"


def check_layer(
  cls,
  init_kwargs,
  args,
  kwargs=None,
  expected_shapes=None,
  keras_file=True,
  trainable=True,
  mixed_tolerance=0.1,
  seed=0,
):
  """Runs every check above on `cls(**init_kwargs)` called as `layer(*args, **kwargs)`.

  Args:
    cls: the layer class.
    init_kwargs: its constructor arguments.
    args: positional input tensors (batch first).
    kwargs: keyword arguments of the call (masks, flags).
    expected_shapes: the output shapes, as a structure like the outputs.
    keras_file: also round-trip a functional model holding the layer through a `.keras` file
      (its call must take the tensors of `args` only).
    trainable: whether the layer has trainable variables (then a gradient step is checked).
    mixed_tolerance: absolute and relative tolerance of bfloat16 against float32 outputs.
    seed: the random seed of the layer's initial weights.

  Returns:
    The built float32 layer.
  """
  kwargs = dict(kwargs or {})
  args = [tf.convert_to_tensor(a) for a in args]
  keras.utils.set_random_seed(seed)  # the same initial weights on every run
  layer = cls(**init_kwargs)
  expected = _call(layer, args, kwargs)
  check_shapes(layer, expected, args, expected_shapes)
  check_serialization(cls, args, kwargs, layer, expected)
  if keras_file:
    check_keras_file(layer, args, expected)
  if trainable:
    check_gradient_step(layer, args, kwargs)
    expected = _call(layer, args, kwargs)  # after the step
  check_mixed_precision(cls, init_kwargs, args, kwargs, layer, expected, mixed_tolerance)
  return layer
