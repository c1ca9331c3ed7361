"""The training loop: `train_and_evaluate(config, workdir)`.

One custom `tf.function` train step (dict in, dict of scalars out) under a `tf.distribute`
strategy, one `tf.train.CheckpointManager` that owns saving and resuming, separate TensorBoard
writers for training and evaluation, and evaluators chosen by name that run periodically.
"""

import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from captioning import config_checks
from captioning import evaluators
from captioning import experiment
from captioning import losses
from captioning import summaries
from captioning.data import datasets
from captioning.data import pipeline


def create_strategy(name):
  """Returns the tf.distribute strategy named by `config.train.strategy`."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(
    f"Unknown config.train.strategy {name!r}; expected default | mirrored | multi_worker_mirrored"
  )


def make_train_step(model, optimizer, config, strategy, pad_id):
  """Builds the distributed train step: batch dict -> dict of scalar metrics."""
  num_replicas = strategy.num_replicas_in_sync
  train_config = config.train

  def loss_and_grads(batch):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]  # [B, T] each
    mask = tf.not_equal(targets, pad_id)
    with tf.GradientTape() as tape:
      out = model({"image": batch["image"], "tokens": inputs}, training=True)
      ce, _ = losses.masked_cross_entropy(
        targets, out["logits"], mask, train_config.label_smoothing
      )
      penalty = losses.doubly_stochastic_penalty(out["attention"], mask)
      loss = ce + config.model.doubly_stochastic_weight * penalty
      # Gradients are summed over replicas when applied, so each replica's loss is scaled down.
      scaled = loss / num_replicas
    grads = tape.gradient(scaled, model.trainable_variables)
    grads, grad_norm = tf.clip_by_global_norm(grads, train_config.grad_clip_norm)
    metrics = {
      "loss": loss,
      "cross_entropy": ce,
      "attention_penalty": penalty,
      "grad_norm": grad_norm,
      "teacher_forced_token_accuracy": losses.token_accuracy(targets, out["logits"], mask),
      "mean_gate": tf.reduce_mean(tf.boolean_mask(tf.cast(out["gate"], tf.float32), mask)),
    }
    return grads, metrics

  compiled = tf.function(loss_and_grads, jit_compile=bool(train_config.jit_compile))

  def replica_step(batch):
    grads, metrics = compiled(batch)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return metrics

  @tf.function
  def train_step(batch):
    per_replica = strategy.run(replica_step, args=(batch,))
    return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

  return train_step


def _create_evaluators(config, tokenizer, val_split):
  return {
    name: evaluators.create(
      name,
      split=val_split,
      tokenizer=tokenizer,
      max_caption_length=config.data.max_caption_length,
      max_decode_length=config.decode.max_length,
      batch_size=config.eval.batch_size,
      jit_compile=config.train.jit_compile,
      caption_metrics=config.eval.caption_metrics,
      decode_method=config.decode.method,
      beam_size=config.decode.beam_size,
    )
    for name in config.eval.evaluators
  }


def _evaluate(step, model, config, val_split, evals, writer):
  metrics = {}
  for name, evaluator in evals.items():
    start = time.time()
    metrics.update(evaluator.run(model))
    logging.info("eval %s took %.1fs", name, time.time() - start)
    if name == "captions":
      summaries.write_caption_samples(
        writer, step, val_split, evaluator, model.feature_map_shape, config.eval.num_samples, "val"
      )
  summaries.write_scalars(writer, step, metrics, "val")
  writer.flush()
  logging.info(
    "step %d eval: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
  )
  return metrics


def train_and_evaluate(config, workdir):
  """Trains the captioner a config describes, evaluating and checkpointing into `workdir`.

  Rerunning the same command resumes from the latest checkpoint in `workdir`.

  Args:
    config: a ConfigDict with the keys of `configs/shapes_sat.py`.
    workdir: where config, tokenizer, checkpoints, summaries and the final model go.

  Returns:
    The last evaluation's metrics (a dict of floats; empty if no evaluator ran).
  """
  config_checks.validate(config)
  keras.utils.set_random_seed(config.seed)
  experiment.prepare_workdir(config, workdir)

  train_split = datasets.load_split(config.data, "train", seed=config.seed)
  tokenizer = experiment.load_or_build_tokenizer(workdir, train_split, config.data)
  tokens = pipeline.encode_captions(train_split, tokenizer, config.data.max_caption_length)
  val_split = datasets.load_split(config.data, "val", seed=config.seed).take(
    config.eval.num_examples
  )
  logging.info(
    "train: %d images, val: %d images, vocabulary: %d words",
    len(train_split),
    len(val_split),
    tokenizer.vocab_size,
  )

  strategy = create_strategy(config.train.strategy)
  with strategy.scope():
    prior = tokenizer.word_counts_prior(c for caps in train_split.captions for c in caps)
    model = experiment.build_model(config, tokenizer.vocab_size, output_bias=prior)
    optimizer = experiment.build_optimizer(config.train)
    optimizer.build(model.trainable_variables)
  # The step counter lives on the host, outside the strategy: it is not a replicated variable.
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  checkpoint = experiment.training_checkpoint(model, optimizer, step)
  manager = tf.train.CheckpointManager(
    checkpoint,
    experiment.checkpoint_dir(workdir),
    max_to_keep=config.train.max_checkpoints,
    step_counter=step,
  )
  if manager.restore_or_initialize():
    logging.info("Resumed from %s at step %d", manager.latest_checkpoint, int(step))

  stream = pipeline.TrainStream(
    train_split,
    tokens,
    config.train.batch_size,
    config.seed,
    length_multiple=config.data.bucket_length_multiple,
    curriculum_steps=config.train.get("curriculum_steps", 0),
    curriculum_min_words=config.train.get("curriculum_min_words", 0),
    curriculum_max_words=config.train.get("curriculum_max_words", 0),
    curriculum_min_objects=config.train.get("curriculum_min_objects", 0),
    curriculum_max_objects=config.train.get("curriculum_max_objects", 0),
  )
  batches = iter(strategy.experimental_distribute_dataset(stream.dataset(int(step))))
  train_step = make_train_step(model, optimizer, config, strategy, tokenizer.pad_id)
  evals = _create_evaluators(config, tokenizer, val_split)
  train_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "train"))
  eval_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "eval"))
  if int(step) == 0:
    summaries.write_config(train_writer, config)

  history, last_eval = [], {}
  last_time, last_step = time.time(), int(step)
  try:
    while int(step) < config.train.num_steps:
      metrics = train_step(next(batches))
      step.assign_add(1)
      current = int(step)
      history.append(metrics)
      if current % config.train.log_every == 0 or current == config.train.num_steps:
        means = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
        if not np.isfinite(means["loss"]):
          raise FloatingPointError(
            f"Training loss is {means['loss']} at step {current}; stopping without saving. "
            f"The last good checkpoint is {manager.latest_checkpoint}. Try a lower "
            "config.train.learning_rate or config.train.grad_clip_norm."
          )
        elapsed = time.time() - last_time
        means["perplexity"] = float(np.exp(min(means["cross_entropy"], 50.0)))
        means["learning_rate"] = float(optimizer.learning_rate)
        means["steps_per_sec"] = (current - last_step) / elapsed
        means["examples_per_sec"] = means["steps_per_sec"] * config.train.batch_size
        summaries.write_scalars(train_writer, current, means, "train")
        logging.info(
          "step %d: %s", current, ", ".join(f"{k}={v:.4g}" for k, v in sorted(means.items()))
        )
        history, last_time, last_step = [], time.time(), current
      if evals and (current % config.train.eval_every == 0 or current == config.train.num_steps):
        last_eval = _evaluate(current, model, config, val_split, evals, eval_writer)
        last_time = time.time()  # evaluation time does not count against steps/sec
      if current % config.train.checkpoint_every == 0:
        manager.save(checkpoint_number=current, check_interval=False)
  except KeyboardInterrupt:
    logging.warning("Interrupted: saving a checkpoint at step %d before exiting.", int(step))
    manager.save(checkpoint_number=int(step), check_interval=False)
    raise
  if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{int(step)}"):
    manager.save(checkpoint_number=int(step), check_interval=False)
  model.save(os.path.join(workdir, "model.keras"))
  train_writer.flush()
  return last_eval
