"""Matmul FLOPs of a traced function, counted from the static shapes of its graph.

`matmul_flops(fn, *specs)` traces `fn`, inlines every function call (as freezing a graph does)
and adds up 2 * M * N * K of each MatMul, BatchMatMul, Einsum and convolution: the work of
matrix units, which MFU measures. Elementwise ops (activations, softmax, adds) are not counted.
A training step's count is taken as 3 times the forward pass's (the backward pass runs two
matmuls of the same size for each forward one: one for the input's gradient, one for the
weight's), the usual convention for model FLOPs utilisation.
"""

import collections
import re

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

# A training step's matmul FLOPs per forward one.
TRAIN_FACTOR = 3


def _shape(tensor):
  dims = tensor.shape.as_list()
  if any(d is None for d in dims):
    raise ValueError(f"{tensor.name} has an unknown dimension {dims}: trace with static shapes")
  return dims


def _matmul(op):
  a, b = (_shape(t) for t in op.inputs[:2])
  if op.get_attr("transpose_a"):
    a = a[::-1]
  if op.get_attr("transpose_b"):
    b = b[::-1]
  return 2 * a[0] * a[1] * b[1]


def _batch_matmul(op):
  a, b = (_shape(t) for t in op.inputs[:2])
  if op.get_attr("adj_x"):
    a = a[:-2] + [a[-1], a[-2]]
  if op.get_attr("adj_y"):
    b = b[:-2] + [b[-1], b[-2]]
  batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
  return 2 * int(np.prod(batch, dtype=np.int64)) * a[-2] * a[-1] * b[-1]


def _einsum(op):
  """2 * the product of the sizes of every index named in the equation (a contraction of
  two operands); 0 for one operand (a transpose or a sum)."""
  equation = op.get_attr("equation").decode().replace(" ", "")
  inputs = equation.split("->")[0]
  if "." in equation:
    raise ValueError(f"Ellipsis einsum {equation!r} is not counted")
  sizes = {}
  for term, tensor in zip(inputs.split(","), op.inputs):
    sizes.update(zip(term, _shape(tensor)))
  if len(op.inputs) == 1:
    return 0
  return 2 * int(np.prod([sizes[i] for i in sizes], dtype=np.int64))


def _conv(op):
  out = _shape(op.outputs[0])
  kernel = _shape(op.inputs[1])  # [kh, kw, in, out] (depthwise: [kh, kw, in, multiplier])
  if op.type == "DepthwiseConv2dNative":
    return 2 * int(np.prod(out, dtype=np.int64)) * kernel[0] * kernel[1]
  return 2 * int(np.prod(out, dtype=np.int64)) * kernel[0] * kernel[1] * kernel[2]


_COUNTERS = {
  "MatMul": _matmul,
  "BatchMatMul": _batch_matmul,
  "BatchMatMulV2": _batch_matmul,
  "BatchMatMulV3": _batch_matmul,
  "Einsum": _einsum,
  "Conv2D": _conv,
  "DepthwiseConv2dNative": _conv,
}
_LOOP_OPS = ("While", "StatelessWhile", "Enter", "NextIteration")
_FUSED = re.compile(r"^_(Fused|MklFused|Mkl)")


def matmul_flops(fn, *specs):
  """{op type: FLOPs} of the matmuls and convolutions `fn` runs when traced at `specs`.

  Args:
    fn: a Python function of tensors.
    *specs: `tf.TensorSpec`s with fully static shapes.

  Raises:
    ValueError: a counted op has an unknown dimension, or the graph holds an op of a kind that
      multiplies matrices but is not counted (so a count is never silently short).
  """
  concrete = tf.function(fn).get_concrete_function(*specs)
  _, graph_def = convert_to_constants.convert_variables_to_constants_v2_as_graph(concrete)
  with tf.Graph().as_default() as graph:
    tf.graph_util.import_graph_def(graph_def, name="")
  counts = collections.Counter()
  for op in graph.get_operations():
    if op.type in _COUNTERS:
      counts[op.type] += _COUNTERS[op.type](op)
    elif _FUSED.match(op.type) or op.type == "Conv3D":
      raise ValueError(f"Cannot count the FLOPs of {op.type} ({op.name})")
    elif op.type in _LOOP_OPS:
      raise ValueError(f"{op.name} is a loop: its FLOPs depend on a trip count unknown here")
  return dict(counts)


def total(counts):
  """The sum of a `matmul_flops` result."""
  return int(sum(counts.values()))
