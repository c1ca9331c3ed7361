"""The distributed train step: a batch dict in, a dict of scalar metrics out.

Under any tf.distribute strategy (one device, MirroredStrategy, MultiWorkerMirroredStrategy)
the step computes what one device computes on the global batch:

- Every token weighs the same: each replica sums its loss and divides by the token count of
  the global batch (all-reduced), so the replicas' gradients add up to the gradient of the
  global batch's mean loss.
- Gradients are all-reduced first; then (under float16, divided by the loss scale) checked for
  non-finite values, clipped by their global norm and applied, so `grad_norm` and the clip
  threshold are those of the global gradient. Keras optimizers sum the replicas' gradients once
  more when they apply them, so each replica hands them g / N.
- With `grad_accumulation_steps` K, each replica's batch is cut into K micro-batches run one
  after another (only one micro-batch's activations alive at a time) and their gradients
  summed: the update is the one of the whole batch.
- A non-finite loss or gradient skips the update (model and optimizer variables, step counts
  included, stay as they were) and is reported as `skipped_nonfinite`. Under float16 a
  non-finite gradient of a finite loss is a loss-scale overflow instead: the scale halves (as
  `keras.optimizers.LossScaleOptimizer` does) and `loss_scale_overflow` reports it. The
  decision to skip is taken in cross-replica context (`merge_call`), since TensorFlow forbids
  the optimizer's own `merge_call` inside a `tf.cond` in replica context.
"""

import keras
import tensorflow as tf

from captioning import losses
from captioning.models import randomness

_SUM = tf.distribute.ReduceOp.SUM


def _fill(grads, variables):
  """Dense gradients, zeros for variables the loss does not reach.

  An embedding's gradient comes as `tf.IndexedSlices` with a row per occurrence of a word;
  Keras's Adam squares such slices row by row (sum of squares instead of square of sum for a
  repeated word), so its update would depend on how the batch is cut into replicas and
  micro-batches. Dense, it is Adam's update of the global batch's gradient, however cut.
  """
  return [
    tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)
  ]


def _map(fn, grad):
  """`fn` applied to a dense gradient, or to the values of a `tf.IndexedSlices` one."""
  if isinstance(grad, tf.IndexedSlices):
    return tf.IndexedSlices(fn(grad.values), grad.indices, grad.dense_shape)
  return fn(grad)


def _add(a, b):
  """The sum of two gradients of one variable (sparse ones keep every row they touch)."""
  if isinstance(a, tf.IndexedSlices):
    return tf.IndexedSlices(
      tf.concat([a.values, b.values], 0), tf.concat([a.indices, b.indices], 0), a.dense_shape
    )
  return a + b


def make_train_step(model, optimizers, loss_fn, strategy, pad_id, train_config, seed=0, step=None):
  """Builds the distributed train step: (batch dict, tune_backbone) -> dict of scalar metrics.

  Args:
    model: the Captioner.
    optimizers: `experiment.build_optimizers`' result, {name: (optimizer, variables)}; under
      mixed_float16 "optimizer" is a `keras.optimizers.LossScaleOptimizer`.
    loss_fn: a `losses.CaptionLoss`.
    strategy: the tf.distribute strategy the model was built under.
    pad_id: the tokenizer's padding id.
    train_config: the `train` section (grad_clip_norm, grad_accumulation_steps, jit_compile).
    seed: the experiment seed.
    step: the step counter variable (the step being trained, before it is incremented): every
      random draw of the step (dropout) is keyed on (seed, step), so a resumed run replays the
      draws of an uninterrupted one (`models/randomness.py`). None: draws are not re-keyed.

  Returns:
    `train_step(batch, tune_backbone=False)`: with `tune_backbone` (a Python bool: one trace
    each), the backbone optimizer's variables get gradients and updates too. Its metrics are
    those of the global batch, the same on every replica. `train_step.compilations()` counts
    the traces (XLA compilations with jit_compile) of the gradient computation so far.
  """
  num_replicas = strategy.num_replicas_in_sync
  micro_batches = int(train_config.grad_accumulation_steps)
  scaler = optimizers["optimizer"][0]
  if not isinstance(scaler, keras.optimizers.LossScaleOptimizer):
    scaler = None

  def piece_sums(piece, variables, totals):
    """One (micro-)batch: (gradients of its share of the global loss, its summed metrics)."""
    inputs, targets = piece["tokens"][:, :-1], piece["tokens"][:, 1:]  # [b, T] each
    mask = tf.not_equal(targets, pad_id)
    with tf.GradientTape() as tape:
      out = model({**piece, "tokens": inputs}, training=True)  # the model takes its image keys
      sums = loss_fn.sums(targets, out, mask)
      share, _ = loss_fn.from_sums(sums, totals[0], totals[1])
      objective = share if scaler is None else scaler.scale_loss(share)
    grads = _fill(tape.gradient(objective, variables), variables)
    sums["correct_tokens"] = losses.correct_tokens(targets, out["logits"], mask)
    if "gate" in out:  # decoders with a gating scalar report its mean
      gate = tf.cast(out["gate"], tf.float32)
      sums["gate"] = tf.reduce_sum(tf.where(mask, gate, tf.zeros_like(gate)))
    return grads, sums

  def local_sums(batch, variables, totals):
    """This replica's batch, in `micro_batches` pieces one after another: each piece starts
    once the previous one's gradients exist, so only one piece's activations are alive."""
    size = tf.shape(batch["tokens"])[0] // micro_batches
    grads, sums = None, None
    for i in range(micro_batches):
      piece = {k: v[i * size : (i + 1) * size] for k, v in batch.items()}
      after = tf.nest.flatten(grads, expand_composites=True) if grads else []
      with tf.control_dependencies(after):
        more_grads, more_sums = piece_sums(piece, variables, totals)
      if grads is None:
        grads, sums = more_grads, more_sums
      else:
        grads = [_add(a, b) for a, b in zip(grads, more_grads)]
        sums = {k: sums[k] + more_sums[k] for k in sums}
    return grads, sums

  def phase(tune_backbone):
    """(the optimizers that step, their variables, the compiled local gradients)."""
    active = [
      (optimizer, variables)
      for name, (optimizer, variables) in optimizers.items()
      if tune_backbone or name != "backbone_optimizer"
    ]
    variables = [v for _, group in active for v in group]
    compiled = tf.function(
      lambda batch, totals: local_sums(batch, variables, totals),
      jit_compile=bool(train_config.jit_compile),
    )
    return active, compiled

  phases = {False: phase(False), True: phase(True)}

  def apply(active, grads):
    """Replica context: each optimizer applies its slice of `grads` (for the loss scaler, its
    inner optimizer: the gradients are already unscaled)."""
    start = 0
    for optimizer, variables in active:
      if optimizer is scaler:
        optimizer = scaler.inner_optimizer
      optimizer.apply_gradients(zip(grads[start : start + len(variables)], variables))
      start += len(variables)

  def update_or_skip(distribution, active, grads, finite):
    """Cross-replica context: apply the update where everything was finite, else skip it."""
    finite = distribution.experimental_local_results(finite)[0]  # the same on every replica

    def update():
      distribution.extended.call_for_each_replica(lambda g: apply(active, g), args=(grads,))
      if scaler is not None:  # doubles after dynamic_growth_steps finite steps in a row
        grow = tf.equal(scaler.step_counter, scaler.dynamic_growth_steps - 1)
        scaler.dynamic_scale.assign(tf.where(grow, 2.0, 1.0) * scaler.dynamic_scale)
        counter = scaler.step_counter
        scaler.step_counter.assign(tf.where(grow, tf.zeros_like(counter), counter + 1))

    def skip():
      if scaler is not None:
        scaler.dynamic_scale.assign(0.5 * scaler.dynamic_scale)
        scaler.step_counter.assign(tf.zeros_like(scaler.step_counter))

    tf.cond(finite, update, skip)

  def replica_step(batch, tune_backbone):
    context = tf.distribute.get_replica_context()
    active, compiled = phases[tune_backbone]
    targets = batch["tokens"][:, 1:]
    local = tf.stack(
      [
        tf.reduce_sum(tf.cast(tf.not_equal(targets, pad_id), tf.float32)),
        tf.cast(tf.shape(targets)[0], tf.float32),
      ]
    )
    totals = context.all_reduce(_SUM, local)  # [tokens, examples] of the global batch
    grads, sums = compiled(batch, totals)
    grads, sums = context.all_reduce(_SUM, (grads, sums))  # the global batch's
    loss, metrics = loss_fn.from_sums(sums, totals[0], totals[1])
    if scaler is not None:
      grads = [_map(lambda g: g / scaler.dynamic_scale, g) for g in grads]
      metrics["loss_scale"] = tf.identity(scaler.dynamic_scale)
    loss_finite = tf.math.is_finite(loss)
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
    finite = tf.logical_and(
      loss_finite, tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])
    )
    # Clipping to the global norm and this replica's share are one pass over the gradients (a
    # non-finite step is skipped whole in update_or_skip, so its values are never applied).
    grad_norm = tf.linalg.global_norm(grads)
    scale = tf.minimum(1.0, train_config.grad_clip_norm / grad_norm) / num_replicas
    clipped = [_map(lambda g: g * tf.cast(scale, g.dtype), g) for g in grads]
    context.merge_call(lambda d, g, f: update_or_skip(d, active, g, f), args=(clipped, finite))
    overflow = tf.logical_and(tf.logical_not(finite), loss_finite)
    if scaler is None:  # without loss scaling, every non-finite gradient is a fault
      overflow = tf.zeros_like(overflow)
    metrics["grad_norm"] = grad_norm
    metrics["skipped_nonfinite"] = tf.cast(
      tf.logical_not(tf.logical_or(finite, overflow)), tf.float32
    )
    metrics["loss_scale_overflow"] = tf.cast(overflow, tf.float32)
    metrics["teacher_forced_token_accuracy"] = sums["correct_tokens"] / tf.maximum(totals[0], 1.0)
    if "gate" in sums:
      metrics["mean_gate"] = sums["gate"] / tf.maximum(totals[0], 1.0)
    return metrics

  @tf.function
  def train_step(batch, tune_backbone=False):
    if step is not None:
      randomness.rekey(model, seed, step)  # the step's draws: a function of (seed, step) only
    per_replica = strategy.run(replica_step, args=(batch, tune_backbone))
    return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

  # How often the gradient computation was traced (and, with jit_compile, compiled by XLA): once
  # per caption-length bucket and phase, which the length buckets keep few.
  train_step.compilations = lambda: sum(
    compiled.experimental_get_tracing_count() for _, compiled in phases.values()
  )
  return train_step
