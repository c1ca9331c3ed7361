"""Train steps written the way the common tutorials write them, for `bench.py` to time.

* `baseline_step`: the project's Show-Attend-Tell decoder (the same weights, the same maths and
  loss as `train_step.make_train_step`), trained as tutorials train: a Python `for` loop over
  time steps inside a `tf.function`, calling the decoder's layers one step at a time, the
  attention projecting the features again at every step, the output layer and the loss applied
  per step, no XLA. A test checks its loss equals the project's on the same weights and batch.
* `TutorialPort`: the TensorFlow "Image captioning with visual attention" tutorial's model and
  `train_step` (`CNN_Encoder`: a Dense+ReLU projection of cached features; `BahdanauAttention`,
  whose `W1(features)` is recomputed at every step; `RNN_Decoder`: a GRU fed
  [context; embedding], `fc1`, `fc2`; a loss summed over steps), ported to Keras 3 at given
  dimensions. One change: the GRU starts each step from the previous hidden state (the tutorial
  calls it without one, so its recurrence is cut at every step); the work is the same.
"""

import keras
import tensorflow as tf

from captioning import losses


def baseline_step(model, optimizer, loss_fn, pad_id):
  """The tutorial-style train step of the project's SAT captioner: (features, tokens) -> loss.

  Args:
    model: a Captioner with a `sat_lstm` decoder and a backbone encoder (cached features).
    optimizer: a Keras optimizer (no clipping: tutorials apply the raw gradients).
    loss_fn: a `losses.CaptionLoss`.
    pad_id: the padding id.

  Returns:
    A `tf.function` (batch {"features" [B, H, W, C], "tokens" [B, T + 1]}) -> loss, which
    updates the model, and its loss-only twin `loss(batch, training=True)` (no update) as
    `step.loss`.
  """
  decoder = model.decoder

  def forward(batch, training=True):
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    mask = tf.not_equal(targets, pad_id)
    features = model.encode({"features": batch["features"]}, training=training)  # [B, L, C]
    state = decoder.initial_state({"features": features}, training=training)
    ce, attention_sum = 0.0, 0.0
    for t in range(tokens.shape[1] - 1):
      embedded = decoder.embedding(inputs[:, t])
      h = state["h"]
      context, alpha = decoder.attention(features, h)  # projects the features again
      beta = decoder.gate(h) if decoder.gate is not None else tf.ones_like(context[:, :1])
      z = beta * context
      h, state = decoder._advance(embedded, z, alpha, state, training)
      logits = decoder._output(embedded, h, z, training)  # [B, V]
      step_ce, _ = losses.masked_cross_entropy_sum(
        targets[:, t : t + 1], logits[:, tf.newaxis], mask[:, t : t + 1]
      )
      ce += step_ce
      attention_sum += tf.cast(alpha, tf.float32) * tf.cast(mask[:, t : t + 1], tf.float32)
    tokens_count = tf.reduce_sum(tf.cast(mask, tf.float32))
    penalty = tf.reduce_mean(tf.square(1.0 - attention_sum))
    return ce / tf.maximum(tokens_count, 1.0) + loss_fn.doubly_stochastic_weight * penalty

  @tf.function(jit_compile=False)
  def step(batch):
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
      loss = forward(batch)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  step.loss = tf.function(forward)
  return step


class BahdanauAttention(keras.layers.Layer):
  """The tutorial's attention: score = V(tanh(W1(features) + W2(hidden))), W1 at every call."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.W1 = keras.layers.Dense(units)
    self.W2 = keras.layers.Dense(units)
    self.V = keras.layers.Dense(1)

  def call(self, features, hidden):
    hidden_with_time_axis = tf.expand_dims(hidden, 1)
    attention_hidden_layer = tf.nn.tanh(self.W1(features) + self.W2(hidden_with_time_axis))
    score = self.V(attention_hidden_layer)
    attention_weights = tf.nn.softmax(score, axis=1)
    context_vector = tf.reduce_sum(attention_weights * features, axis=1)
    return context_vector, attention_weights


class CNNEncoder(keras.layers.Layer):
  """The tutorial's encoder of cached features: Dense(embedding_dim) and ReLU."""

  def __init__(self, embedding_dim, **kwargs):
    super().__init__(**kwargs)
    self.fc = keras.layers.Dense(embedding_dim)

  def call(self, x):
    return tf.nn.relu(self.fc(x))


class RNNDecoder(keras.layers.Layer):
  """The tutorial's decoder: attention, embedding, GRU over one step, fc1, fc2."""

  def __init__(self, embedding_dim, units, vocab_size, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
    self.gru = keras.layers.GRU(
      units, return_sequences=True, return_state=True, recurrent_initializer="glorot_uniform"
    )
    self.fc1 = keras.layers.Dense(units)
    self.fc2 = keras.layers.Dense(vocab_size)
    self.attention = BahdanauAttention(units)

  def call(self, x, features, hidden, loop_free=False):
    """One step, as the tutorial's; `loop_free` runs the GRU's cell directly instead of the GRU
    layer's loop over one time step (the same maths), for counting FLOPs."""
    context_vector, attention_weights = self.attention(features, hidden)
    x = self.embedding(x)
    x = tf.concat([tf.expand_dims(context_vector, 1), x], axis=-1)
    if loop_free:
      output, [state] = self.gru.cell(x[:, 0], [hidden])
      output = output[:, tf.newaxis]
    else:
      output, state = self.gru(x, initial_state=hidden)
    output = self.fc1(output)
    output = tf.reshape(output, (-1, output.shape[2]))
    return self.fc2(output), state, attention_weights


class TutorialPort:
  """The tutorial's model and train step at given dimensions.

  Args:
    embedding_dim: the projection of the features and the word embedding (256).
    units: GRU and attention size (512).
    vocab_size: output vocabulary (5000).
    start_id: the id of <start>, which the tutorial feeds first.
  """

  def __init__(self, embedding_dim, units, vocab_size, start_id=1):
    self.encoder = CNNEncoder(embedding_dim)
    self.decoder = RNNDecoder(embedding_dim, units, vocab_size)
    self.start_id = start_id
    self.optimizer = keras.optimizers.Adam()
    self.loss_object = keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction="none"
    )
    self.train_step = tf.function(self._train_step)

  def loss_function(self, real, pred):
    mask = tf.math.logical_not(tf.math.equal(real, 0))
    loss_ = self.loss_object(real, pred)
    mask = tf.cast(mask, dtype=loss_.dtype)
    loss_ *= mask
    return tf.reduce_mean(loss_)

  def _train_step(self, img_tensor, target):
    loss = 0.0
    hidden = tf.zeros((target.shape[0], self.decoder.units))
    dec_input = tf.expand_dims([self.start_id] * target.shape[0], 1)
    with tf.GradientTape() as tape:
      features = self.encoder(img_tensor)
      for i in range(1, target.shape[1]):
        predictions, hidden, _ = self.decoder(dec_input, features, hidden)
        loss += self.loss_function(target[:, i], predictions)
        dec_input = tf.expand_dims(target[:, i], 1)
    total_loss = loss / int(target.shape[1])
    trainable_variables = self.encoder.trainable_variables + self.decoder.trainable_variables
    gradients = tape.gradient(loss, trainable_variables)
    self.optimizer.apply_gradients(zip(gradients, trainable_variables))
    return loss, total_loss

  def forward_logits(self, img_tensor, target):
    """The logits of every step (no update; the GRU cell called directly), for counting FLOPs:
    [B, T, V]."""
    hidden = tf.zeros((target.shape[0], self.decoder.units))
    dec_input = tf.expand_dims([self.start_id] * target.shape[0], 1)
    features = self.encoder(img_tensor)
    outputs = []
    for i in range(1, target.shape[1]):
      predictions, hidden, _ = self.decoder(dec_input, features, hidden, loop_free=True)
      outputs.append(predictions)
      dec_input = tf.expand_dims(target[:, i], 1)
    return tf.stack(outputs, 1)
