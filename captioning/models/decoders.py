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
  With `init_dropout`, training drops the whole mean feature of an example with that
  probability (the state then starts from the init layers' biases). The mean alone names every
  object but not where it is; without this the decoder learns to describe objects from it and
  barely uses attention, so it never learns where things are, which spatial relations need.
  With `coverage`, the state also carries the attention each location has received so far, and
  the attention scores see it (see `layers.AdditiveAttention`).

  Args:
    vocab_size: output vocabulary size V.
    embed_dim: word embedding size E.
    hidden_dim: LSTM size D.
    attention_dim: attention size A.
    dropout: dropout rate before the output projection.
    coverage: feed the accumulated attention into the attention scores.
    init_dropout: probability of dropping an example's mean feature in training.
    init_moments: start the state from the spatial moments of the features as well as their
      mean: mean_l(f_l * row_l) and mean_l(f_l * col_l), where the last two feature channels
      must hold each location's (row, column). They say where each kind of feature lies, so the
      layout is known from the first word on.
    gate: use the gating scalar beta_t; without it the context enters unscaled (beta_t = 1).
    output_bias: optional [V] initial output bias, e.g. unigram log-frequencies, so training
      does not spend its first steps learning word frequencies. Not serialised: saved weights
      replace it.
  """

  def __init__(
    self,
    vocab_size,
    embed_dim,
    hidden_dim,
    attention_dim,
    dropout=0.0,
    coverage=False,
    init_dropout=0.0,
    init_moments=False,
    gate=True,
    output_bias=None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.embed_dim = embed_dim
    self.hidden_dim = hidden_dim
    self.attention_dim = attention_dim
    self.dropout = dropout
    self.coverage = coverage
    self.init_dropout = init_dropout
    self.init_moments = init_moments
    self.use_gate = gate
    policy = self.dtype_policy
    self.embedding = keras.layers.Embedding(vocab_size, embed_dim, name="embedding", dtype=policy)
    self.init_h = keras.layers.Dense(hidden_dim, activation="tanh", name="init_h", dtype=policy)
    self.init_c = keras.layers.Dense(hidden_dim, activation="tanh", name="init_c", dtype=policy)
    self.attention = layers.AdditiveAttention(
      attention_dim, coverage=coverage, name="attention", dtype=policy
    )
    self.gate = (
      keras.layers.Dense(1, activation="sigmoid", name="gate", dtype=policy) if gate else None
    )
    self.cell = keras.layers.LSTMCell(hidden_dim, name="lstm", dtype=policy)
    self.out_h = keras.layers.Dense(embed_dim, name="out_h", dtype=policy)
    self.out_z = keras.layers.Dense(embed_dim, use_bias=False, name="out_z", dtype=policy)
    self.out_dropout = keras.layers.Dropout(dropout)
    bias_init = (
      "zeros"
      if output_bias is None
      else keras.initializers.Constant(tf.convert_to_tensor(output_bias, tf.float32))
    )
    # Logits stay float32 under mixed precision, so the softmax is numerically safe.
    self.logits = keras.layers.Dense(
      vocab_size, bias_initializer=bias_init, name="logits", dtype="float32"
    )

  def build(self, features_shape, tokens_shape=None):
    batch, _, channels = features_shape
    self.embedding.build((batch, None))
    init_size = channels * 3 if self.init_moments else channels
    self.init_h.build((batch, init_size))
    self.init_c.build((batch, init_size))
    self.attention.build(features_shape, (batch, self.hidden_dim))
    if self.gate is not None:
      self.gate.build((batch, self.hidden_dim))
    self.cell.build((batch, self.embed_dim + channels))
    self.out_h.build((batch, self.hidden_dim))
    self.out_z.build((batch, channels))
    self.logits.build((batch, self.embed_dim))

  def initial_state(self, features, training=False):
    """Returns [h_0, c_0] ([B, D] each) from the mean of `features` [B, L, C], plus a zero
    coverage [B, L] when the decoder uses coverage."""
    mean = tf.reduce_mean(features, axis=1)  # [B, C]
    if self.init_moments:
      rows, cols = features[:, :, -2:-1], features[:, :, -1:]  # [B, L, 1] each
      mean = tf.concat(
        [mean, tf.reduce_mean(features * rows, axis=1), tf.reduce_mean(features * cols, axis=1)],
        axis=-1,
      )  # [B, 3C]
    if self.init_dropout and training:
      # One keep/drop decision per example: the whole mean goes, not scattered channels.
      keep = tf.cast(tf.random.uniform([tf.shape(mean)[0], 1]) >= self.init_dropout, mean.dtype)
      mean = mean * keep
    state = [self.init_h(mean), self.init_c(mean)]
    if self.coverage:
      state.append(tf.zeros(tf.shape(features)[:2], features.dtype))
    return state

  def precompute(self, features):
    """Per-image work shared by all steps: the projected features [B, L, A]."""
    return self.attention.precompute(features)

  def _attend(self, features, projected, state, feature_mask):
    h = state[0]
    context, alpha = self.attention(
      features,
      h,
      projected_features=projected,
      feature_mask=feature_mask,
      coverage=state[2] if self.coverage else None,
    )  # [B, C], [B, L]
    if self.gate is None:
      beta = tf.ones_like(context[:, :1])  # [B, 1]
    else:
      beta = self.gate(h)  # [B, 1]
    return beta * context, alpha, tf.squeeze(beta, -1)

  def _advance(self, embedded, z, alpha, state, training):
    h, lstm_state = self.cell(tf.concat([embedded, z], -1), state[:2], training=training)
    if self.coverage:
      lstm_state = list(lstm_state) + [state[2] + tf.cast(alpha, state[2].dtype)]
    return h, list(lstm_state)

  def _output(self, embedded, h, z, training):
    return self.logits(
      self.out_dropout(embedded + self.out_h(h) + self.out_z(z), training=training)
    )

  def step(self, tokens, state, features, projected, feature_mask=None, training=False):
    """Decodes one step.

    Args:
      tokens: [B] ids of the previous words.
      state: from `initial_state` or the previous step.
      features: [B, L, C].
      projected: `precompute(features)`.
      feature_mask: optional bool [B, L].

    Returns:
      (logits [B, V] float32, new state, attention [B, L], gate [B]).
    """
    embedded = self.embedding(tokens)  # [B, E]
    z, alpha, beta = self._attend(features, projected, state, feature_mask)
    h, state = self._advance(embedded, z, alpha, state, training)
    return self._output(embedded, h, z, training), state, alpha, beta

  def call(self, features, tokens, feature_mask=None, training=False):
    """Teacher-forced decoding of `tokens` [B, T] (the caption without its last token).

    Returns:
      {"logits": [B, T, V] float32, "attention": [B, T, L], "gate": [B, T]}.
    """
    num_steps = tokens.shape[1]
    if num_steps is None:
      raise ValueError(
        "Teacher forcing needs a static caption length; pad batches to a fixed "
        "length (the input pipeline does)."
      )
    embedded = self.embedding(tokens)  # [B, T, E]
    projected = self.precompute(features)  # [B, L, A]
    state = self.initial_state(features, training=training)
    hs, zs, alphas, betas = [], [], [], []
    # A static Python loop: the step count is fixed per batch shape, which XLA and the CPU
    # runtime both handle better than a dynamic while loop for short captions.
    for t in range(num_steps):
      z, alpha, beta = self._attend(features, projected, state, feature_mask)
      h, state = self._advance(embedded[:, t], z, alpha, state, training)
      hs.append(h)
      zs.append(z)
      alphas.append(alpha)
      betas.append(beta)
    logits = self._output(embedded, tf.stack(hs, 1), tf.stack(zs, 1), training)  # [B, T, V]
    return {"logits": logits, "attention": tf.stack(alphas, 1), "gate": tf.stack(betas, 1)}

  def get_config(self):
    return {
      **super().get_config(),
      "vocab_size": self.vocab_size,
      "embed_dim": self.embed_dim,
      "hidden_dim": self.hidden_dim,
      "attention_dim": self.attention_dim,
      "dropout": self.dropout,
      "coverage": self.coverage,
      "init_dropout": self.init_dropout,
      "init_moments": self.init_moments,
      "gate": self.use_gate,
    }


def build_decoder(
  name,
  *,
  vocab_size,
  embed_dim,
  hidden_dim,
  attention_dim,
  dropout=0.0,
  coverage=False,
  init_dropout=0.0,
  init_moments=False,
  gate=True,
  output_bias=None,
  dtype=None,
  **unused,
):
  """Returns the decoder layer called `name` ("sat_lstm")."""
  del unused  # keys used by other decoders (num_heads, num_layers)
  if name == "sat_lstm":
    return ShowAttendTellDecoder(
      vocab_size,
      embed_dim,
      hidden_dim,
      attention_dim,
      dropout,
      coverage=coverage,
      init_dropout=init_dropout,
      init_moments=init_moments,
      gate=gate,
      output_bias=output_bias,
      name="decoder",
      dtype=dtype,
    )
  raise ValueError(f"Unknown decoder {name!r}; known: ['sat_lstm']")
