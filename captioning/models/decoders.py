"""Caption decoders over a sequence of image features [B, L, C], chosen by
`config.model.decoder.name`.

Every decoder keeps one contract (`CaptionDecoder`), which every search in `decoding.py` uses:

* `call(features, tokens)`: teacher-forced scoring of whole captions, for training;
* `prepare(features) -> memory`: per-image work done once (e.g. projected features, or the
  cross-attention keys and values of a Transformer);
* `initial_state(memory) -> state`;
* `step(tokens, state, memory) -> (logits, state, outputs)`: one word for every row.

`memory` and `state` are nested structures (dicts) of tensors whose first axis is the batch,
(times beams in beam search). A search tiles both once per beam, and reorders the state after
each step with one `tf.gather` over that axis; the memory of a row never changes, because beams
stay with their image. A Transformer's key/value cache is state of this kind.

Adding a decoder: a `CaptionDecoder` subclass with `@DECODERS.register("its_name")` (or, in a
module of its own, a "module:Class" line in `DECODERS`), whose constructor takes `vocab_size`,
`output_bias` and the keys of its `config.model.decoder` section;
`tests/models/test_decoders.py` checks the contract for every registered decoder.
"""

import keras
import tensorflow as tf

from captioning import kernels
from captioning import registry
from captioning.models import layers
from captioning.models import output_projection
from captioning.models import sat_recurrence

DECODERS = registry.Registry(
  "config.model.decoder.name",
  {"transformer": "captioning.models.transformer:TransformerDecoder"},  # its own module
)


class CaptionDecoder(keras.layers.Layer):
  """The contract of every decoder (see the module docstring); not a decoder itself."""

  # Whether `prepare` reads each location's (row, column) from the last two feature channels
  # (the neck's linear position channels); `Captioner` checks the two sections agree.
  needs_linear_coordinates = False
  # The most positions (words fed, `<start>` included) the decoder can score or decode; None
  # for no limit. Checked against the caption and decoding lengths before training.
  max_steps = None

  def prepare(self, features):
    """Per-image tensors every step reads: a nested structure, batch first."""
    raise NotImplementedError

  def initial_state(self, memory, training=False):
    """The state before the first word: a nested structure, batch first."""
    raise NotImplementedError

  def step(self, tokens, state, memory, training=False):
    """Decodes one word per row.

    Args:
      tokens: int [B] ids of the previous words.
      state: from `initial_state` or the previous step.
      memory: from `prepare`.

    Returns:
      (logits [B, V] float32, the new state, outputs) where outputs is a dict holding at least
      "attention" [B, L], the weights of this step over the image locations.
    """
    raise NotImplementedError


@DECODERS.register("sat_lstm")
@keras.saving.register_keras_serializable(package="captioning")
class ShowAttendTellDecoder(CaptionDecoder):
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
  The keep/drop draw comes from the layer's own `seed_generator`, like every Keras dropout, so
  `randomness.rekey` keys it on (seed, step) with the rest of the model's draws.
  With `attention_coverage`, the state also carries the attention each location has received so
  far, and the attention scores see it (see `layers.AdditiveAttention`).
  Teacher forcing (`call`) without coverage runs all T steps as one op with a hand-written
  gradient that forms each weight's gradient once over all steps (`sat_recurrence`: a training
  step takes 25-30% less time on CPU); `step`, and `call` with coverage, run the layers one
  step at a time. Both read the same variables.

  Memory: {"features" [B, L, C], "projected" [B, L, A]}; state: {"h" [B, D], "c" [B, D]} and
  "coverage" [B, L] with coverage; step outputs: {"attention" [B, L], "gate" [B]}.

  Args:
    vocab_size: output vocabulary size V.
    embed_dim: word embedding size E.
    hidden_dim: LSTM size D.
    attention_dim: attention size A.
    dropout: dropout rate before the output projection.
    attention_coverage: feed the accumulated attention into the attention scores.
    attention_gate: use the gating scalar beta_t; without it the context enters unscaled.
    init_dropout: probability of dropping an example's mean feature in training.
    init_moments: start the state from the spatial moments of the features as well as their
      mean: mean_l(f_l * row_l) and mean_l(f_l * col_l), where the last two feature channels
      must hold each location's (row, column). They say where each kind of feature lies, so the
      layout is known from the first word on.
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
    attention_coverage=False,
    attention_gate=True,
    init_dropout=0.0,
    init_moments=False,
    output_bias=None,
    **kwargs,
  ):
    super().__init__(**kwargs)
    for name, value in (
      ("vocab_size", vocab_size),
      ("embed_dim", embed_dim),
      ("hidden_dim", hidden_dim),
      ("attention_dim", attention_dim),
    ):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (("dropout", dropout), ("init_dropout", init_dropout)):
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    self.vocab_size = vocab_size
    self.embed_dim = embed_dim
    self.hidden_dim = hidden_dim
    self.attention_dim = attention_dim
    self.dropout = dropout
    self.attention_coverage = attention_coverage
    # Teacher forcing through `sat_recurrence` (not a config key: the same numbers either way);
    # False runs `_call_loop`, the model's maths step by step, e.g. to count its FLOPs.
    self.fused_recurrence = True
    # In it, the attention's [B, L, A] work through the compiled CPU kernels where they build
    # and no GPU is visible (`captioning.kernels`; again the same numbers up to rounding).
    self.attention_kernels = True
    self.attention_gate = attention_gate
    self.init_dropout = init_dropout
    self.init_moments = init_moments
    self.needs_linear_coordinates = bool(init_moments)
    policy = self.dtype_policy
    self.embedding = keras.layers.Embedding(vocab_size, embed_dim, name="embedding", dtype=policy)
    self.init_h = keras.layers.Dense(hidden_dim, activation="tanh", name="init_h", dtype=policy)
    self.init_c = keras.layers.Dense(hidden_dim, activation="tanh", name="init_c", dtype=policy)
    self.attention = layers.AdditiveAttention(
      attention_dim, coverage=attention_coverage, name="attention", dtype=policy
    )
    self.gate = (
      keras.layers.Dense(1, activation="sigmoid", name="gate", dtype=policy)
      if attention_gate
      else None
    )
    self.cell = keras.layers.LSTMCell(hidden_dim, name="lstm", dtype=policy)
    self.out_h = keras.layers.Dense(embed_dim, name="out_h", dtype=policy)
    self.out_z = keras.layers.Dense(embed_dim, use_bias=False, name="out_z", dtype=policy)
    self.out_dropout = keras.layers.Dropout(dropout, dtype=policy)
    # The initial-state dropout's own generator: a model's draws come only from generators its
    # layers own, which `randomness.rekey` sets at every training step (no global RNG state).
    self.seed_generator = keras.random.SeedGenerator() if init_dropout else None
    bias_init = (
      "zeros"
      if output_bias is None
      else keras.initializers.Constant(tf.convert_to_tensor(output_bias, tf.float32))
    )
    # Logits stay float32 under mixed precision, so the softmax is numerically safe; the
    # projection's backward products run in the compute dtype, as every other layer's.
    self.logits = output_projection.VocabularyProjection(
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

  def prepare(self, features):
    """{"features": [B, L, C], "projected": [B, L, A]}: the attention's feature projection is
    computed once per image, not at every step."""
    return {"features": features, "projected": self.attention.precompute(features)}

  def initial_state(self, memory, training=False):
    """{"h", "c"} ([B, D] each) from the mean of the features, and a zero "coverage" [B, L]
    when the decoder uses coverage."""
    features = memory["features"]
    mean = tf.reduce_mean(features, axis=1)  # [B, C]
    if self.init_moments:
      rows, cols = features[:, :, -2:-1], features[:, :, -1:]  # [B, L, 1] each
      mean = tf.concat(
        [mean, tf.reduce_mean(features * rows, axis=1), tf.reduce_mean(features * cols, axis=1)],
        axis=-1,
      )  # [B, 3C]
    if self.init_dropout and training:
      # One keep/drop decision per example: the whole mean goes, not scattered channels.
      draw = keras.random.uniform([tf.shape(mean)[0], 1], seed=self.seed_generator)  # [B, 1]
      keep = tf.cast(draw >= self.init_dropout, mean.dtype)
      mean = mean * keep
    state = {"h": self.init_h(mean), "c": self.init_c(mean)}
    if self.attention_coverage:
      state["coverage"] = tf.zeros(tf.shape(features)[:2], features.dtype)
    return state

  def _attend(self, state, memory):
    h = state["h"]
    context, alpha = self.attention(
      memory["features"],
      h,
      projected_features=memory["projected"],
      coverage=state["coverage"] if self.attention_coverage else None,
    )  # [B, C], [B, L]
    beta = tf.ones_like(context[:, :1]) if self.gate is None else self.gate(h)  # [B, 1]
    return beta * context, alpha, tf.squeeze(beta, -1)

  def _advance(self, embedded, z, alpha, state, training):
    h, (h, c) = self.cell(tf.concat([embedded, z], -1), [state["h"], state["c"]], training=training)
    new_state = {"h": h, "c": c}
    if self.attention_coverage:
      new_state["coverage"] = state["coverage"] + tf.cast(alpha, state["coverage"].dtype)
    return h, new_state

  def _output(self, embedded, h, z, training):
    return self.logits(
      self.out_dropout(embedded + self.out_h(h) + self.out_z(z), training=training)
    )

  def step(self, tokens, state, memory, training=False):
    embedded = self.embedding(tokens)  # [B, E]
    z, alpha, beta = self._attend(state, memory)
    h, state = self._advance(embedded, z, alpha, state, training)
    return self._output(embedded, h, z, training), state, {"attention": alpha, "gate": beta}

  def call(self, features, tokens, training=False):
    """Teacher-forced decoding of `tokens` [B, T] (the caption without its last token).

    Returns:
      {"logits": [B, T, V] float32, "attention": [B, T, L], "gate": [B, T]}.
    """
    if tokens.shape[1] is None:
      raise ValueError(
        "Teacher forcing needs a static caption length; pad batches to a fixed "
        "length (the input pipeline does)."
      )
    if not self._fused():
      return self._call_loop(features, tokens, training)
    return self._call_fused(features, tokens, training)

  def _fused(self):
    """Whether `call` runs the fused recurrence (it has no coverage)."""
    return self.fused_recurrence and not self.attention_coverage

  def attention_ops(self):
    """The compiled attention ops `call` passes to the fused recurrence, or None (then its
    [B, L, A] work runs on TensorFlow ops; under XLA it does so anyway)."""
    if self._fused() and self.attention_kernels:
      return kernels.cpu_attention_ops()
    return None

  def _call_loop(self, features, tokens, training=False):
    """`call` as T calls of `_attend` and `_advance`, the steps `step` takes."""
    embedded = self.embedding(tokens)  # [B, T, E]
    memory = self.prepare(features)
    state = self.initial_state(memory, training=training)
    hs, zs, alphas, betas = [], [], [], []
    # A static Python loop: the step count is fixed per batch shape, which XLA and the CPU
    # runtime both handle better than a dynamic while loop for short captions.
    for t in range(tokens.shape[1]):
      z, alpha, beta = self._attend(state, memory)
      h, state = self._advance(embedded[:, t], z, alpha, state, training)
      hs.append(h)
      zs.append(z)
      alphas.append(alpha)
      betas.append(beta)
    logits = self._output(embedded, tf.stack(hs, 1), tf.stack(zs, 1), training)  # [B, T, V]
    return {"logits": logits, "attention": tf.stack(alphas, 1), "gate": tf.stack(betas, 1)}

  def _call_fused(self, features, tokens, training=False):
    """`call` without coverage: `_call_loop`'s numbers (up to rounding), with the recurrence as
    one op whose gradient forms each weight's gradient once over all steps (`sat_recurrence`)."""
    read = lambda variable: tf.cast(variable, self.compute_dtype)  # the layers' own variables
    features = tf.cast(features, self.compute_dtype)
    embedded = self.embedding(tokens)  # [B, T, E]
    # The attention's feature projection is part of the recurrence's op, not `prepare`'s.
    state = self.initial_state({"features": features}, training=training)
    cell, attention = self.cell, self.attention
    h, z, alpha, beta = sat_recurrence.recurrence(
      embedded,
      features,
      state["h"],
      state["c"],
      lstm=(read(cell.kernel), read(cell.recurrent_kernel), read(cell.bias)),
      attention=(
        read(attention.feature_dense.kernel),
        read(attention.feature_dense.bias),
        read(attention.state_dense.kernel),
        read(attention.state_dense.bias),
        read(attention.score_dense.kernel),
        read(attention.score_dense.bias),
      ),
      gate=None if self.gate is None else (read(self.gate.kernel), read(self.gate.bias)),
      kernels=self.attention_ops(),
    )
    logits = self._output(embedded, h, z, training)  # [B, T, V]
    return {"logits": logits, "attention": alpha, "gate": beta}

  def get_config(self):
    return {
      **super().get_config(),
      "vocab_size": self.vocab_size,
      "embed_dim": self.embed_dim,
      "hidden_dim": self.hidden_dim,
      "attention_dim": self.attention_dim,
      "dropout": self.dropout,
      "attention_coverage": self.attention_coverage,
      "attention_gate": self.attention_gate,
      "init_dropout": self.init_dropout,
      "init_moments": self.init_moments,
    }


def build_decoder(decoder_config, vocab_size, output_bias=None, dtype=None):
  """Builds the decoder that `config.model.decoder` names, from the rest of that section.

  Args:
    decoder_config: the `model.decoder` section: `name` and the decoder's own arguments.
    vocab_size: the tokenizer's vocabulary size.
    output_bias: optional initial output bias [vocab_size].
    dtype: a Keras dtype policy, or None for the default.
  """
  return DECODERS.build(
    decoder_config,
    "config.model.decoder",
    vocab_size=vocab_size,
    output_bias=output_bias,
    name="decoder",
    dtype=dtype,
  )
