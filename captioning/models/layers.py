"""Attention and shape layers: the raw-TensorFlow-op heart of the captioner.

Every raw TF op here (`tf.reshape`, `tf.transpose`, `tf.matmul`, `tf.nn.softmax`, `tf.where`)
runs inside `Layer.call` (or a function called from it), where its inputs are real tensors. In
Keras 3 the same ops applied to the symbolic `KerasTensor`s of a functional model fail with
"A KerasTensor cannot be used as input to a TensorFlow function"; wrapping them in a layer is the
Keras 3 way, and these layers are that wrapping.

Shapes use B = batch, H/W = feature-map height/width, L = H*W locations, C = channels,
Tq/Tk = query/key lengths, N = heads.
"""

import keras
import tensorflow as tf

_MASK_VALUE = -1e9  # finite, so fully masked rows give zeros instead of NaN


def dot_product_attention(query, key, value, mask=None):
  """Scaled dot-product attention over the key axis.

  Args:
    query: [..., Tq, D].
    key: [..., Tk, D].
    value: [..., Tk, Dv].
    mask: optional bool tensor broadcastable to [..., Tq, Tk]; False keys get zero weight.
      A key-padding mask [B, Tk] should be passed as [B, 1, Tk] (or [B, 1, 1, Tk] with heads).

  Returns:
    (output [..., Tq, Dv], weights [..., Tq, Tk]) where each weight row sums to 1 over the
    unmasked keys (and is all zeros when every key of that row is masked).
  """
  depth = tf.cast(tf.shape(key)[-1], query.dtype)
  scores = tf.matmul(query, key, transpose_b=True) / tf.sqrt(depth)  # [..., Tq, Tk]
  # The softmax runs in float32 under mixed precision (the mask value is finite there).
  scores = tf.cast(scores, tf.float32)
  if mask is not None:
    mask = tf.cast(mask, tf.bool)
    scores = tf.where(mask, scores, _MASK_VALUE)
  weights = tf.cast(tf.nn.softmax(scores, axis=-1), value.dtype)  # over keys, not queries
  if mask is not None:
    # Exact zeros for masked keys, and zero rows where nothing may be attended.
    weights = weights * tf.cast(mask, weights.dtype)
  return tf.matmul(weights, value), weights  # [..., Tq, Dv]


def causal_mask(length):
  """A [length, length] bool mask where query i may attend to keys 0..i."""
  return tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)


def column_sums(x):
  """Sums `x` [R, N] over its rows as a [1, R] x [R, N] product: several times faster than
  tf.reduce_sum over axis 0 on CPU (e.g. 0.7 against 4.5 ms for [3136, 2048] float32). For
  bias gradients."""
  return tf.reshape(tf.matmul(tf.ones([1, tf.shape(x)[0]], x.dtype), x), [-1])


@keras.saving.register_keras_serializable(package="captioning")
class SpatialFlatten(keras.layers.Layer):
  """Reshapes feature maps [B, H, W, C] to a sequence of locations [B, H*W, C]."""

  def call(self, feature_maps):
    shape = tf.shape(feature_maps)
    return tf.reshape(feature_maps, [shape[0], shape[1] * shape[2], shape[3]])

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    return (b, None if h is None or w is None else h * w, c)


@keras.saving.register_keras_serializable(package="captioning")
class Threshold(keras.layers.Layer):
  """A step function: 1 where the input exceeds `threshold`, else 0 (e.g. to binarise maps).

  Args:
    threshold: the cut-off value.
  """

  def __init__(self, threshold=0.5, **kwargs):
    super().__init__(**kwargs)
    self.threshold = float(threshold)

  def call(self, inputs):
    return tf.where(inputs > self.threshold, tf.ones_like(inputs), tf.zeros_like(inputs))

  def get_config(self):
    return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="captioning")
class PositionEmbedding2D(keras.layers.Layer):
  """Adds learned row and column embeddings to feature maps [B, H, W, C].

  Attention pools features by content; without a position signal the decoder could not tell
  where an attended object is, so spatial relations ("left of") would be guesswork.
  """

  def build(self, input_shape):
    _, h, w, c = input_shape
    if h is None or w is None:
      raise ValueError(f"PositionEmbedding2D needs a static feature-map size, got {input_shape}")
    init = keras.initializers.RandomNormal(stddev=0.02)
    self.row_embedding = self.add_weight(shape=(h, 1, c), initializer=init, name="row_embedding")
    self.col_embedding = self.add_weight(shape=(1, w, c), initializer=init, name="col_embedding")

  def call(self, feature_maps):
    position = tf.cast(self.row_embedding + self.col_embedding, feature_maps.dtype)  # [H, W, C]
    return feature_maps + position[tf.newaxis]


@keras.saving.register_keras_serializable(package="captioning")
class AppendCoordinates(keras.layers.Layer):
  """Appends each location's row and column to feature maps [B, H, W, C].

  An attention-weighted sum of the features then carries the attended place explicitly, which
  spatial relations ("left of", "above") need.

  Args:
    encoding: "linear" appends (row, column) scaled to [-1, 1]: [B, H, W, C + 2].
      "one_hot" appends a one-hot row and a one-hot column: [B, H, W, C + H + W]; pooled by
      attention this is the attention's distribution over rows and over columns, which a linear
      layer can read positions from directly.
  """

  def __init__(self, encoding="linear", **kwargs):
    super().__init__(**kwargs)
    if encoding not in ("linear", "one_hot"):
      raise ValueError(f"encoding must be 'linear' or 'one_hot', got {encoding!r}")
    self.encoding = encoding

  def call(self, feature_maps):
    shape = tf.shape(feature_maps)
    if self.encoding == "linear":
      rows = tf.linspace(-1.0, 1.0, shape[1])[:, tf.newaxis]  # [H, 1]
      cols = tf.linspace(-1.0, 1.0, shape[2])[:, tf.newaxis]  # [W, 1]
    else:
      rows = tf.eye(shape[1])  # [H, H]
      cols = tf.eye(shape[2])  # [W, W]
    grid = tf.concat(
      [  # [H, W, 2] or [H, W, H + W]
        tf.tile(rows[:, tf.newaxis, :], [1, shape[2], 1]),
        tf.tile(cols[tf.newaxis, :, :], [shape[1], 1, 1]),
      ],
      axis=-1,
    )
    grid = tf.tile(grid[tf.newaxis], [shape[0], 1, 1, 1])
    return tf.concat([feature_maps, tf.cast(grid, feature_maps.dtype)], axis=-1)

  def compute_output_shape(self, input_shape):
    extra = 2 if self.encoding == "linear" else input_shape[1] + input_shape[2]
    return tuple(input_shape[:-1]) + (input_shape[-1] + extra,)

  def get_config(self):
    return {**super().get_config(), "encoding": self.encoding}


@keras.saving.register_keras_serializable(package="captioning")
class RelativeKeypoints(keras.layers.Layer):
  """Tells every location where the image's salient features lie relative to it.

  Each of `units` learned channels g_k = Dense(f) gets a keypoint, its spatial soft-argmax
  (Levine et al. 2016): p_k = sum_l softmax_l(g_k)(l) * (row_l, col_l), with rows and columns
  in [-1, 1]. Location l then gets the offsets of every keypoint from itself,

    (p_k - (row_l, col_l)) for k = 1..units            -> [B, H, W, 2 * units]

  (all row offsets, then all column offsets). At a location on object A, a channel whose
  keypoint sits on object B has a positive column offset when B lies to the right of A and a
  negative one when it lies to the left, and an offset near zero for a channel that keys on A
  itself. So an attention that rests on A reads the relation "A left of B" linearly from the
  attended context. Without it the decoder has to carry A's position in its recurrent state
  until it attends to B and then compare the two, which a Show-Attend-Tell LSTM is slow to
  learn (docs/results.md). Offsets are O(1) from the first step, whatever the image's
  background: the soft-argmax normalises each channel over the locations.

  Args:
    units: number of keypoint channels (the output has twice as many channels).
  """

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = int(units)
    if self.units < 1:
      raise ValueError(f"units must be >= 1, got {units}")
    self.project = keras.layers.Dense(self.units, name="project", dtype=self.dtype_policy)

  def build(self, input_shape):
    self.project.build(tuple(input_shape))

  def call(self, feature_maps):
    logits = self.project(feature_maps)  # [B, H, W, U]
    shape = tf.shape(logits)
    flat = tf.reshape(logits, [shape[0], shape[1] * shape[2], self.units])  # [B, L, U]
    weights = tf.nn.softmax(tf.cast(flat, tf.float32), axis=1)  # over locations, per channel
    rows = tf.linspace(-1.0, 1.0, shape[1])  # [H]
    cols = tf.linspace(-1.0, 1.0, shape[2])  # [W]
    grid = tf.reshape(tf.stack(tf.meshgrid(rows, cols, indexing="ij"), -1), [-1, 2])  # [L, 2]
    keypoints = tf.einsum("blu,ld->bdu", weights, grid)  # [B, 2, U]: row, column of each
    row_offsets = keypoints[:, tf.newaxis, tf.newaxis, 0, :] - rows[:, tf.newaxis, tf.newaxis]
    col_offsets = keypoints[:, tf.newaxis, tf.newaxis, 1, :] - cols[tf.newaxis, :, tf.newaxis]
    offsets = tf.concat(
      [
        row_offsets + tf.zeros_like(col_offsets),  # [B, H, W, 2U]
        col_offsets + tf.zeros_like(row_offsets),
      ],
      axis=-1,
    )
    return tf.cast(offsets, self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (2 * self.units,)

  def get_config(self):
    return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="captioning")
class MultiHeadAttention(keras.layers.Layer):
  """Multi-head scaled dot-product attention written with raw TF ops and explicit masks.

  Args:
    num_heads: number of heads N.
    key_dim: size of each head's query/key/value projection.
    output_dim: size of the output; defaults to the query's last dimension.
    dropout: dropout rate on the attention weights during training.
  """

  def __init__(self, num_heads, key_dim, output_dim=None, dropout=0.0, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads
    self.key_dim = key_dim
    self.output_dim = output_dim
    self.dropout = dropout
    inner = num_heads * key_dim
    self.query_dense = keras.layers.Dense(inner, name="query", dtype=self.dtype_policy)
    self.key_dense = keras.layers.Dense(inner, name="key", dtype=self.dtype_policy)
    self.value_dense = keras.layers.Dense(inner, name="value", dtype=self.dtype_policy)
    self.weights_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
    self.output_dense = None  # its size depends on the query, known in build

  def build(self, query_shape, value_shape=None, key_shape=None):
    value_shape = query_shape if value_shape is None else value_shape
    key_shape = value_shape if key_shape is None else key_shape
    self.query_dense.build(query_shape)
    self.key_dense.build(key_shape)
    self.value_dense.build(value_shape)
    out_dim = self.output_dim or query_shape[-1]
    self.output_dense = keras.layers.Dense(out_dim, name="output", dtype=self.dtype_policy)
    self.output_dense.build(tuple(query_shape[:-1]) + (self.num_heads * self.key_dim,))

  def _split_heads(self, x):
    # [B, T, N*Dh] -> [B, N, T, Dh]
    shape = tf.shape(x)
    x = tf.reshape(x, [shape[0], shape[1], self.num_heads, self.key_dim])
    return tf.transpose(x, [0, 2, 1, 3])

  def call(
    self,
    query,
    value=None,
    key=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    return_attention_scores=False,
    training=False,
  ):
    """Attends from `query` [B, Tq, Dq] to `value` [B, Tk, Dv] (keys default to values).

    Args:
      key_mask: optional bool [B, Tk]; False marks padding keys.
      attention_mask: optional bool [B, Tq, Tk] (or broadcastable).
      use_causal_mask: also forbid attending to later positions (self-attention).
      return_attention_scores: also return the weights [B, N, Tq, Tk].
    """
    value = query if value is None else value
    k, v = self.keys_values(value if key is None else key, value)  # [B, N, Tk, Dh] each

    mask = None
    if key_mask is not None:
      mask = tf.cast(key_mask, tf.bool)[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, Tk]
    if attention_mask is not None:
      extra = tf.cast(attention_mask, tf.bool)
      extra = extra[:, tf.newaxis] if extra.shape.rank == 3 else extra  # [B, 1, Tq, Tk]
      mask = extra if mask is None else tf.logical_and(mask, extra)
    if use_causal_mask:
      causal = causal_mask(tf.shape(query)[1])[tf.newaxis, tf.newaxis]  # [1, 1, Tq, Tq]
      mask = causal if mask is None else tf.logical_and(mask, causal)

    output, weights = self.attend(query, k, v, mask, training=training)
    if return_attention_scores:
      return output, weights
    return output

  def keys_values(self, key, value):
    """Projects keys [B, Tk, Dk] and values [B, Tk, Dv] to heads: (k, v), [B, N, Tk, Dh] each.

    What a decoder caches: the cross-attention's keys and values of the image once per image,
    and the self-attention's of each new word once.
    """
    return self._split_heads(self.key_dense(key)), self._split_heads(self.value_dense(value))

  def attend(self, query, k, v, mask=None, training=False):
    """Attends from `query` [B, Tq, Dq] to heads `k`, `v` ([B, N, Tk, Dh], from `keys_values`).

    Args:
      mask: optional bool, broadcastable to [B, N, Tq, Tk]; False keys get zero weight.

    Returns:
      (output [B, Tq, output_dim], weights [B, N, Tq, Tk]).
    """
    q = self._split_heads(self.query_dense(query))  # [B, N, Tq, Dh]
    attended, weights = dot_product_attention(q, k, v, mask)  # [B, N, Tq, Dh], [B, N, Tq, Tk]
    if self.dropout and training:
      # Dropout acts on the weights used for the output; the returned scores stay normalised.
      attended = tf.matmul(self.weights_dropout(weights, training=training), v)
    shape = tf.shape(attended)
    attended = tf.reshape(
      tf.transpose(attended, [0, 2, 1, 3]), [shape[0], shape[2], self.num_heads * self.key_dim]
    )  # [B, Tq, N*Dh]
    return self.output_dense(attended), weights

  def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
    return tuple(query_shape[:-1]) + (self.output_dim or query_shape[-1],)

  def get_config(self):
    return {
      **super().get_config(),
      "num_heads": self.num_heads,
      "key_dim": self.key_dim,
      "output_dim": self.output_dim,
      "dropout": self.dropout,
    }


@keras.saving.register_keras_serializable(package="captioning")
class AdditiveAttention(keras.layers.Layer):
  """Soft additive ("Bahdanau") attention of Show, Attend and Tell over image locations.

  `precompute` projects the features once per image; `call` then scores every location against
  the decoder state at each step: e = v^T tanh(W f + U h), alpha = softmax(e) over locations.
  With `coverage`, the attention each location has received so far enters the score too,
  e = v^T tanh(W f + U h + w c) (Tu et al. 2016), so the decoder can tell described objects
  from the ones still to mention.

  Args:
    units: attention dimension.
    coverage: whether `call` takes the accumulated attention [B, L] into account.
  """

  def __init__(self, units, coverage=False, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.coverage = coverage
    self.feature_dense = keras.layers.Dense(units, name="feature_proj", dtype=self.dtype_policy)
    self.state_dense = keras.layers.Dense(units, name="state_proj", dtype=self.dtype_policy)
    self.score_dense = keras.layers.Dense(1, name="score", dtype=self.dtype_policy)
    self.coverage_dense = (
      keras.layers.Dense(units, use_bias=False, name="coverage_proj", dtype=self.dtype_policy)
      if coverage
      else None
    )

  def build(self, features_shape, state_shape):
    self.feature_dense.build(features_shape)
    self.state_dense.build(state_shape)
    self.score_dense.build(tuple(features_shape[:-1]) + (self.units,))
    if self.coverage_dense is not None:
      self.coverage_dense.build(tuple(features_shape[:-1]) + (1,))

  def precompute(self, features):
    """Projects features [B, L, C] -> [B, L, A]; reused at every decoding step."""
    return self.feature_dense(features)

  def call(self, features, state, projected_features=None, feature_mask=None, coverage=None):
    """Attends over `features` [B, L, C] from `state` [B, D].

    Args:
      projected_features: `precompute(features)`, to skip recomputing it at each step.
      feature_mask: optional bool [B, L]; False locations get zero weight.
      coverage: [B, L] attention received so far; required when built with coverage=True.

    Returns:
      (context [B, C], weights [B, L]).
    """
    if projected_features is None:
      projected_features = self.precompute(features)
    hidden = projected_features + self.state_dense(state)[:, tf.newaxis, :]  # [B, L, A]
    if self.coverage_dense is not None:
      if coverage is None:
        raise ValueError("This attention layer was built with coverage; pass `coverage`.")
      hidden += self.coverage_dense(tf.cast(coverage, hidden.dtype)[:, :, tf.newaxis])
    hidden = tf.tanh(hidden)
    scores = tf.cast(tf.squeeze(self.score_dense(hidden), -1), tf.float32)  # [B, L]
    if feature_mask is not None:
      scores = tf.where(feature_mask, scores, _MASK_VALUE)
    # In float32 under mixed precision, then back to the features' dtype.
    weights = tf.cast(tf.nn.softmax(scores, axis=-1), features.dtype)  # over locations
    if feature_mask is not None:
      weights = weights * tf.cast(feature_mask, weights.dtype)
    context = tf.squeeze(tf.matmul(weights[:, tf.newaxis, :], features), 1)  # [B, C]
    return context, weights

  def get_config(self):
    return {**super().get_config(), "units": self.units, "coverage": self.coverage}


@keras.saving.register_keras_serializable(package="captioning")
class TransformerEncoderBlock(keras.layers.Layer):
  """A pre-norm Transformer encoder block over a feature sequence [B, L, C].

  x = x + MHA(LN(x)); x = x + MLP(LN(x)), with the raw-op `MultiHeadAttention` above. Over image
  locations it lets every location see every other one, so the feature of an object can carry
  where the other objects lie relative to it ("there is something to my right"), which a
  decoder attending to one object at a time then reads off directly.

  Args:
    num_heads: attention heads.
    key_dim: size of each head; defaults to C / num_heads.
    mlp_dim: hidden size of the MLP; defaults to 2C.
    dropout: dropout on the attention and MLP outputs during training.
  """

  def __init__(self, num_heads, key_dim=None, mlp_dim=None, dropout=0.0, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads
    self.key_dim = key_dim
    self.mlp_dim = mlp_dim
    self.dropout = dropout
    policy = self.dtype_policy
    self.attention_norm = keras.layers.LayerNormalization(
      epsilon=1e-6, name="attention_norm", dtype=policy
    )
    self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="mlp_norm", dtype=policy)
    self.output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
    # Sizes that default to the input's are known in build.
    self.attention = self.mlp_hidden = self.mlp_output = None

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    channels = input_shape[-1]
    key_dim = self.key_dim or channels // self.num_heads
    mlp_dim = self.mlp_dim or 2 * channels
    if key_dim < 1:
      raise ValueError(f"{channels} channels cannot be split into {self.num_heads} heads")
    policy = self.dtype_policy
    self.attention = MultiHeadAttention(self.num_heads, key_dim, name="attention", dtype=policy)
    self.mlp_hidden = keras.layers.Dense(
      mlp_dim, activation="gelu", name="mlp_hidden", dtype=policy
    )
    self.mlp_output = keras.layers.Dense(channels, name="mlp_output", dtype=policy)
    self.attention_norm.build(input_shape)
    self.attention.build(input_shape)
    self.mlp_norm.build(input_shape)
    self.mlp_hidden.build(input_shape)
    self.mlp_output.build(input_shape[:-1] + (mlp_dim,))

  def call(self, inputs, key_mask=None, training=False):
    """Maps `inputs` [B, L, C] to [B, L, C]; `key_mask` [B, L] marks valid locations."""
    x = inputs
    attended = self.attention(self.attention_norm(x), key_mask=key_mask, training=training)
    x = x + self.output_dropout(attended, training=training)
    hidden = self.mlp_output(self.mlp_hidden(self.mlp_norm(x)))
    return x + self.output_dropout(hidden, training=training)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def get_config(self):
    return {
      **super().get_config(),
      "num_heads": self.num_heads,
      "key_dim": self.key_dim,
      "mlp_dim": self.mlp_dim,
      "dropout": self.dropout,
    }
