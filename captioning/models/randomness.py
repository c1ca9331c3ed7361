"""Training randomness keyed on (seed, step), so a resumed run replays the draws it would have made.

Every random draw of the captioner in training mode (each `keras.layers.Dropout`, the LSTM
cell's, the Show-Attend-Tell decoder's initial-state dropout) comes from a
`keras.random.SeedGenerator` that a layer owns. A generator is a variable `state` [2]: each draw
is a stateless op seeded with `state`, which then advances `state[1]` by one. Left alone, these
states start where the model's constructor put them and advance one draw at a time, so a run
resumed from a checkpoint at step s restarts them from their initial values and makes the draws
of step 0 again, not those of step s.

`rekey(model, seed, step)` sets every generator's state to a value drawn from (seed, step) alone,
before the step's forward pass. The draws of step s are then the same whatever ran before:
an uninterrupted run, a run resumed at s, or a test that ran other steps in between.

Why set generator states rather than pass a stateless seed through `call`: the random ops
stay where they are (Keras `Dropout` takes no seed tensor, and a seed argument would have to
thread through the captioner, neck, blocks, decoders and attention layers, and through every
layer a new model adds); a layer that draws from a generator it owns is covered without being
named here; and a model's generators are found through public Keras API (`Layer.variables` is
`Layer.weights` plus the generators' states). The cost is a few scalar assignments per step.

What this relies on, and the tests in tests/models/test_randomness.py check:
  - every random op of a training-mode call draws from a generator the model owns (not the
    stateful `tf.random.*` ops, nor `keras.random.*` with `seed=None`, which use a global one);
  - the generators are found in a fixed order (layers in construction order), so index i names
    the same generator in every process that builds the same model;
  - generator states are not in the training checkpoint (`keras.random.SeedGenerator` is not a
    `Trackable`), so resuming restores none and needs none, and a checkpoint written before a
    layer gained a generator still restores. Exact resume comes from the keying, not from the
    checkpoint.

Under a `tf.distribute` strategy, call `rekey` in cross-replica context (before
`strategy.run`): the assignment then sets every replica's copy of a generator to the same state,
so every replica draws the same masks for its share of the batch (example j of each replica's
share gets the same dropout mask), as Keras's mirrored generators already did before this
module. The draws of a step are thus a function of (seed, step) and of how the global batch is
split (replicas, `grad_accumulation_steps` micro-batches, which draw one after another); a
resume with the same split replays them exactly.
"""

import tensorflow as tf

# States are kept below 2**30 so that advancing the counter (one per draw) never reaches the
# int32 range that TF's stateless ops reduce a seed to.
_STATE_LIMIT = 2**30


def seed_states(model):
  """The state variables of every `keras.random.SeedGenerator` that `model` owns, in a fixed
  order.

  `Layer.variables` is `Layer.weights` plus the states of the layer's generators (recursively);
  the difference is exactly the generator states, in the order the layers were built.

  Args:
    model: a Keras layer or model.

  Returns:
    A list of int variables of shape [2].
  """
  weights = {id(v) for v in model.weights}
  states, seen = [], set()
  for variable in model.variables:
    if id(variable) not in weights and id(variable) not in seen:
      seen.add(id(variable))
      states.append(variable)
  return states


def step_states(seed, step, count):
  """The [count, 2] int64 generator states of step `step` of a run seeded with `seed`.

  A pure function of (seed, step): a stateless draw keyed on the pair. Both components are
  random, so the streams of different (step, generator) pairs do not overlap in practice (two
  streams share a draw only if their first components agree, p = 2**-30 a pair, and their
  counters, which advance one per draw from a random start, overlap too).

  Args:
    seed: the run's seed (`config.seed`), a Python int or an integer tensor.
    step: the training step, a Python int or an integer scalar tensor (or variable).
    count: how many generators.
  """
  key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
  return tf.random.stateless_uniform(
    [count, 2], seed=key, minval=0, maxval=_STATE_LIMIT, dtype=tf.int64
  )


def rekey(model, seed, step):
  """Sets every random generator of `model` to the state of step `step` of run `seed`.

  Call it once per training step, before the forward pass; inside a `tf.function` step too
  (with `step` a tensor, so the function is traced once). Under a `tf.distribute` strategy, call
  it in cross-replica context, before `strategy.run`.

  Args:
    model: the model (any Keras layer) whose training-mode draws to key.
    seed: the run's seed (`config.seed`).
    step: the index of the batch about to be trained on (the step counter before the update).
  """
  states = seed_states(model)
  if not states:
    return
  values = step_states(seed, step, len(states))
  for i, state in enumerate(states):
    state.assign(tf.cast(values[i], state.dtype))
