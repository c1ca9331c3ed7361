"""Caption decoders over a sequence of image features [B, L, C].

A decoder offers two entry points that share every weight:
  * `call(features, tokens)` - teacher-forced scoring of a whole caption, for training;
  * `initial_state(features)` and `step(tokens, state, features, projected)` - one word at a
    time, for in-graph greedy (and later beam) decoding.
"""

import keras
import tensorflow as tf

from captioning.models import layers


@keras.saving.register_keras_serializable(package="captioning")
class ShowAttendTellDecoder(keras.layers.Layer):
  """The LSTM decoder with soft attention of Xu et al. 2015 ("Show, Attend and Tell").

  At step t, with h_{t-1} the previous LSTM state:
    alpha_t = softmax_L(v^T tanh(W f + U h_{t-1}))        soft attention over locations
    beta_t  = sigmoid(w_b^T h_{t-1} + b)                    the gating scalar
    z_t     = beta_t * sum_l alpha_{t,l} f_l                gated context
    h_t     = LSTM([E y_{t-1}; z_t], h_{t-1})
    logits  = L_o dropout(E y_{t-1} + L_h h_t + L_z z_t)    the deep output layer
  The state starts from the mean feature: h_0 = tanh(W_h mean(f)), c_0 = tanh(W_c mean(f)).

  Args:
    vocab_size: output vocabulary size V.
    embed_dim: word embedding size E.
    hidden_dim: LSTM size D.
    attention_dim: attention size A.
    dropout: dropout rate before the output projection.
    output_bias: optional [V] initial output bias, e.g. unigram log-frequencies, so training
      does not spend its first steps learning word frequencies. Not serialised: saved weights
      replace it.
  """

  def __init__(self, vocab_size, embed_dim, hidden_dim, attention_dim, dropout=0.0,
               output_bias=None, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.embed_dim = embed_dim
    self.hidden_dim = hidden_dim
    self.attention_dim = attention_dim
    self.dropout = dropout
    policy = self.dtype_policy
    self.embedding = keras.layers.Embedding(vocab_size, embed_dim, name="embedding", dtype=policy)
    self.init_h = keras.layers.Dense(hidden_dim, activation="tanh", name="init_h", dtype=policy)
    self.init_c = keras.layers.Dense(hidden_dim, activation="tanh", name="init_c", dtype=policy)
    self.attention = layers.AdditiveAttention(attention_dim, name="attention", dtype=policy)
    self.gate = keras.layers.Dense(1, activation="sigmoid", name="gate", dtype=policy)
    self.cell = keras.layers.LSTMCell(hidden_dim, name="lstm", dtype=policy)
    self.out_h = keras.layers.Dense(embed_dim, name="out_h", dtype=policy)
    self.out_z = keras.layers.Dense(embed_dim, use_bias=False, name="out_z", dtype=policy)
    self.out_dropout = keras.layers.Dropout(dropout)
    bias_init = ("zeros" if output_bias is None else
                 keras.initializers.Constant(tf.convert_to_tensor(output_bias, tf.float32)))
    # Logits stay float32 under mixed precision, so the softmax is numerically safe.
    self.logits = keras.layers.Dense(vocab_size, bias_initializer=bias_init, name="logits",
                                     dtype="float32")

  def build(self, features_shape, tokens_shape=None):
    batch, _, channels = features_shape
    self.embedding.build((batch, None))
    self.init_h.build((batch, channels))
    self.init_c.build((batch, channels))
    self.attention.build(features_shape, (batch, self.hidden_dim))
    self.gate.build((batch, self.hidden_dim))
    self.cell.build((batch, self.embed_dim + channels))
    self.out_h.build((batch, self.hidden_dim))
    self.out_z.build((batch, channels))
    self.logits.build((batch, self.embed_dim))

  def initial_state(self, features):
    """Returns [h_0, c_0], each [B, D], from the mean feature of `features` [B, L, C]."""
    mean = tf.reduce_mean(features, axis=1)  # [B, C]
    return [self.init_h(mean), self.init_c(mean)]

  def precompute(self, features):
    """Per-image work shared by all steps: the projected features [B, L, A]."""
    return self.attention.precompute(features)

  def _attend(self, features, projected, h, feature_mask):
    context, alpha = self.attention(features, h, projected_features=projected,
                                    feature_mask=feature_mask)  # [B, C], [B, L]
    beta = self.gate(h)  # [B, 1]
    return beta * context, alpha, tf.squeeze(beta, -1)

  def _output(self, embedded, h, z, training):
    return self.logits(self.out_dropout(embedded + self.out_h(h) + self.out_z(z),
                                        training=training))

  def step(self, tokens, state, features, projected, feature_mask=None, training=False):
    """Decodes one step.

    Args:
      tokens: [B] ids of the previous words.
      state: [h, c] from `initial_state` or the previous step.
      features: [B, L, C].
      projected: `precompute(features)`.
      feature_mask: optional bool [B, L].

    Returns:
      (logits [B, V] float32, new state, attention [B, L], gate [B]).
    """
    embedded = self.embedding(tokens)  # [B, E]
    z, alpha, beta = self._attend(features, projected, state[0], feature_mask)
    h, state = self.cell(tf.concat([embedded, z], -1), state, training=training)
    return self._output(embedded, h, z, training), state, alpha, beta

  def call(self, features, tokens, feature_mask=None, training=False):
    """Teacher-forced decoding of `tokens` [B, T] (the caption without its last token).

    Returns:
      {"logits": [B, T, V] float32, "attention": [B, T, L], "gate": [B, T]}.
    """
    num_steps = tokens.shape[1]
    if num_steps is None:
      raise ValueError("Teacher forcing needs a static caption length; pad batches to a fixed "
                       "length (the input pipeline does).")
    embedded = self.embedding(tokens)  # [B, T, E]
    projected = self.precompute(features)  # [B, L, A]
    state = self.initial_state(features)
    hs, zs, alphas, betas = [], [], [], []
    # A static Python loop: the step count is fixed per batch shape, which XLA and the CPU
    # runtime both handle better than a dynamic while loop for short captions.
    for t in range(num_steps):
      z, alpha, beta = self._attend(features, projected, state[0], feature_mask)
      h, state = self.cell(tf.concat([embedded[:, t], z], -1), state, training=training)
      hs.append(h)
      zs.append(z)
      alphas.append(alpha)
      betas.append(beta)
    logits = self._output(embedded, tf.stack(hs, 1), tf.stack(zs, 1), training)  # [B, T, V]
    return {"logits": logits, "attention": tf.stack(alphas, 1), "gate": tf.stack(betas, 1)}

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim, "attention_dim": self.attention_dim,
            "dropout": self.dropout}


def build_decoder(name, *, vocab_size, embed_dim, hidden_dim, attention_dim, dropout=0.0,
                  output_bias=None, dtype=None, **unused):
  """Returns the decoder layer called `name` ("sat_lstm")."""
  del unused  # keys used by other decoders (num_heads, num_layers)
  if name == "sat_lstm":
    return ShowAttendTellDecoder(vocab_size, embed_dim, hidden_dim, attention_dim, dropout,
                                 output_bias=output_bias, name="decoder", dtype=dtype)
  raise ValueError(f"Unknown decoder {name!r}; known: ['sat_lstm']")
