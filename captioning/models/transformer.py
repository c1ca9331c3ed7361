"""A Transformer caption decoder (`config.model.decoder.name = "transformer"`), on the project's
one raw-op multi-head attention (`layers.MultiHeadAttention`).

Pre-LN layers of causal self-attention over the words so far, cross-attention over the image
grid, and a feed-forward block; learned token and position embeddings; the output projection
tied to the token embedding or not. Decoding one word at a time keeps a key/value cache of every
layer's self-attention in the state, so a search costs one position per step, not the whole
prefix; the cross-attention keys and values of the image are computed once, in `prepare`.
"""

import keras
import tensorflow as tf

from captioning.models import decoders
from captioning.models import layers
from captioning.models import output_projection


@keras.saving.register_keras_serializable(package="captioning")
class TransformerDecoder(decoders.CaptionDecoder):
  """A pre-LN Transformer decoder over image features [B, L, C].

  Memory: {"features" [B, L, D], "cross_k{i}", "cross_v{i}" [B, N, L, Dh]}; state: {"self_k{i}",
  "self_v{i}" [B, N, max_length, Dh] (the cache), "index" [B] int32, the position of the next
  word}; step outputs: {"attention" [B, L]}, the last layer's cross-attention averaged over
  heads (as `call`'s "attention" [B, T, L]).

  Args:
    vocab_size: output vocabulary size V.
    num_layers: decoder layers.
    width: model width D.
    num_heads: attention heads N (D must divide by N).
    mlp_dim: hidden size of the feed-forward blocks; 4 * width by default.
    dropout: dropout on the attention, feed-forward and embedding outputs in training.
    max_length: the most positions (words fed, `<start>` included) it can decode or score.
    tie_embeddings: use the token embedding, transposed, as the output projection.
    output_bias: optional [V] initial output bias (not serialised; saved weights replace it).
  """

  def __init__(
    self,
    vocab_size,
    num_layers=2,
    width=256,
    num_heads=4,
    mlp_dim=None,
    dropout=0.1,
    max_length=32,
    tie_embeddings=True,
    output_bias=None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    for name, value in (
      ("vocab_size", vocab_size),
      ("num_layers", num_layers),
      ("width", width),
      ("num_heads", num_heads),
      ("max_length", max_length),
    ):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if width % num_heads:
      raise ValueError(f"width {width} must be a multiple of num_heads {num_heads}")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    self.vocab_size, self.num_layers, self.width = vocab_size, num_layers, width
    self.num_heads, self.mlp_dim = num_heads, mlp_dim or 4 * width
    self.dropout, self.max_length, self.tie_embeddings = dropout, max_length, tie_embeddings
    self.max_steps = max_length
    self.bias_init = (
      "zeros"
      if output_bias is None
      else keras.initializers.Constant(tf.convert_to_tensor(output_bias, tf.float32))
    )
    policy = self.dtype_policy
    key_dim = width // num_heads

    def norm(name):
      return keras.layers.LayerNormalization(epsilon=1e-6, name=name, dtype=policy)

    def attention(name):
      return layers.MultiHeadAttention(
        num_heads, key_dim, output_dim=width, dropout=dropout, name=name, dtype=policy
      )

    self.embedding = keras.layers.Embedding(vocab_size, width, name="embedding", dtype=policy)
    self.feature_proj = keras.layers.Dense(width, name="feature_proj", dtype=policy)
    self.feature_norm = norm("feature_norm")
    self.self_norms = [norm(f"self_norm{i}") for i in range(num_layers)]
    self.self_attention = [attention(f"self_attention{i}") for i in range(num_layers)]
    self.cross_norms = [norm(f"cross_norm{i}") for i in range(num_layers)]
    self.cross_attention = [attention(f"cross_attention{i}") for i in range(num_layers)]
    self.mlp_norms = [norm(f"mlp_norm{i}") for i in range(num_layers)]
    self.mlp_hidden = [
      keras.layers.Dense(self.mlp_dim, activation="gelu", name=f"mlp_hidden{i}", dtype=policy)
      for i in range(num_layers)
    ]
    self.mlp_output = [
      keras.layers.Dense(width, name=f"mlp_output{i}", dtype=policy) for i in range(num_layers)
    ]
    self.final_norm = norm("final_norm")
    self.drop = keras.layers.Dropout(dropout, dtype=policy)
    self.logits = (
      None
      if tie_embeddings
      else output_projection.VocabularyProjection(
        vocab_size,
        bias_initializer=self.bias_init,
        name="logits",
        dtype="float32",
      )
    )

  def build(self, features_shape, tokens_shape=None):
    batch, locations, _ = features_shape
    width = self.width
    self.embedding.build((batch, None))
    self.positions = self.add_weight(
      shape=(self.max_length, width),
      initializer=keras.initializers.RandomNormal(stddev=0.02),
      name="positions",
    )
    self.feature_proj.build(features_shape)
    self.feature_norm.build((batch, locations, width))
    sequence = (batch, None, width)
    memory = (batch, locations, width)
    for i in range(self.num_layers):
      for norm in (self.self_norms[i], self.cross_norms[i], self.mlp_norms[i]):
        norm.build(sequence)
      self.self_attention[i].build(sequence)
      self.cross_attention[i].build(sequence, memory)
      self.mlp_hidden[i].build(sequence)
      self.mlp_output[i].build((batch, None, self.mlp_dim))
    self.final_norm.build(sequence)
    if self.logits is None:
      self.output_bias = self.add_weight(
        shape=(self.vocab_size,),
        initializer=self.bias_init,
        name="output_bias",
        dtype="float32",
        autocast=False,  # logits stay float32 under mixed precision
      )
    else:
      self.logits.build(sequence)

  def _project(self, x):
    """Final states [..., D] -> float32 logits [..., V]."""
    if self.logits is not None:
      return self.logits(x)
    table = tf.cast(self.embedding.embeddings, tf.float32)  # [V, D]
    return tf.matmul(tf.cast(x, tf.float32), table, transpose_b=True) + self.output_bias

  def prepare(self, features):
    memory = {"features": self.feature_norm(self.feature_proj(features))}  # [B, L, D]
    for i, attention in enumerate(self.cross_attention):
      memory[f"cross_k{i}"], memory[f"cross_v{i}"] = attention.keys_values(
        memory["features"], memory["features"]
      )
    return memory

  def _layer(self, i, x, h, memory, self_k, self_v, self_mask, training):
    """One pre-LN layer over x [B, T, D], given h = self_norms[i](x) (which the caller has
    already computed for the keys and values); returns (x, cross-attention weights
    [B, N, T, L])."""
    attended, _ = self.self_attention[i].attend(h, self_k, self_v, self_mask, training=training)
    x = x + self.drop(attended, training=training)
    h = self.cross_norms[i](x)
    attended, weights = self.cross_attention[i].attend(
      h, memory[f"cross_k{i}"], memory[f"cross_v{i}"], training=training
    )
    x = x + self.drop(attended, training=training)
    hidden = self.mlp_output[i](self.mlp_hidden[i](self.mlp_norms[i](x)))
    return x + self.drop(hidden, training=training), weights

  def call(self, features, tokens, training=False):
    """Teacher-forced decoding of `tokens` [B, T] (the caption without its last token).

    Returns:
      {"logits": [B, T, V] float32, "attention": [B, T, L]}.
    """
    num_steps = tokens.shape[1]
    if num_steps is not None and num_steps > self.max_length:
      raise ValueError(
        f"Captions of {num_steps} positions exceed the decoder's max_length {self.max_length} "
        "(config.model.decoder.max_length must exceed config.data.max_caption_length)."
      )
    memory = self.prepare(features)
    steps = tf.shape(tokens)[1]
    x = self.embedding(tokens) + tf.cast(self.positions[:steps], self.compute_dtype)
    x = self.drop(x, training=training)
    causal = layers.causal_mask(steps)[tf.newaxis, tf.newaxis]  # [1, 1, T, T]
    for i in range(self.num_layers):
      h = self.self_norms[i](x)
      self_k, self_v = self.self_attention[i].keys_values(h, h)
      x, weights = self._layer(i, x, h, memory, self_k, self_v, causal, training)
    logits = self._project(self.final_norm(x))
    return {"logits": logits, "attention": tf.reduce_mean(weights, axis=1)}

  def initial_state(self, memory, training=False):
    del training
    batch = tf.shape(memory["features"])[0]
    head_dim = self.width // self.num_heads
    empty = tf.zeros([batch, self.num_heads, self.max_length, head_dim], self.compute_dtype)
    state = {"index": tf.zeros([batch], tf.int32)}
    for i in range(self.num_layers):
      state[f"self_k{i}"], state[f"self_v{i}"] = empty, empty
    return state

  def step(self, tokens, state, memory, training=False):
    index = state["index"]  # [B]
    x = self.embedding(tokens) + tf.cast(tf.gather(self.positions, index), self.compute_dtype)
    x = x[:, tf.newaxis]  # [B, 1, D]
    # The cache keeps each layer's self-attention keys and values of the words so far; this
    # step writes its own at `index` and attends to positions 0..index.
    write = tf.one_hot(index, self.max_length, dtype=x.dtype)[:, tf.newaxis, :, tf.newaxis]
    visible = tf.range(self.max_length)[tf.newaxis] <= index[:, tf.newaxis]  # [B, max_length]
    visible = visible[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, max_length]
    new_state = {"index": index + 1}
    for i in range(self.num_layers):
      h = self.self_norms[i](x)
      k_new, v_new = self.self_attention[i].keys_values(h, h)  # [B, N, 1, Dh]
      self_k = state[f"self_k{i}"] * (1 - write) + k_new * write
      self_v = state[f"self_v{i}"] * (1 - write) + v_new * write
      new_state[f"self_k{i}"], new_state[f"self_v{i}"] = self_k, self_v
      x, weights = self._layer(i, x, h, memory, self_k, self_v, visible, training)
    logits = self._project(self.final_norm(x))[:, 0]  # [B, V]
    return logits, new_state, {"attention": tf.reduce_mean(weights, axis=1)[:, 0]}

  def get_config(self):
    return {
      **super().get_config(),
      "vocab_size": self.vocab_size,
      "num_layers": self.num_layers,
      "width": self.width,
      "num_heads": self.num_heads,
      "mlp_dim": self.mlp_dim,
      "dropout": self.dropout,
      "max_length": self.max_length,
      "tie_embeddings": self.tie_embeddings,
    }
