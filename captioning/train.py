"""The training loop: `train_and_evaluate(config, workdir)`.

The run (model, optimizer, checkpoint, data stream, train step) is built by
`trainer.TrainingRun.create`; this module loops over it, logging to separate train and eval
TensorBoard writers, running the evaluators of `config.eval.evaluators` every
`config.train.eval_every` steps, and checkpointing with the run's `tf.train.CheckpointManager`.
"""

import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from captioning import summaries
from captioning import trainer


def _evaluate(step, model, evals, writer):
  metrics = {}
  for name, evaluator in evals.items():
    start = time.time()
    metrics.update(evaluator.run(model))
    evaluator.write_summaries(writer, step, "val")
    logging.info("eval %s took %.1fs", name, time.time() - start)
  summaries.write_scalars(writer, step, metrics, "val")
  writer.flush()
  logging.info(
    "step %d eval: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
  )
  return metrics


def train_and_evaluate(config, workdir):
  """Trains the captioner a config describes, evaluating and checkpointing into `workdir`.

  Rerunning the same command resumes from the latest checkpoint in `workdir`; the data stream
  resumes at the same batch.

  Args:
    config: a ConfigDict with the sections of `configs/shapes_sat.py`.
    workdir: where config, tokenizer, checkpoints, summaries and the final model go.

  Returns:
    The last evaluation's metrics (a dict of floats; empty if no evaluator ran).
  """
  run = trainer.TrainingRun.create(config, workdir)
  model, step, manager, train_config = run.model, run.step, run.manager, config.train
  if manager.latest_checkpoint:
    logging.info("Resumed from %s at step %d", manager.latest_checkpoint, int(step))
  evals = run.evaluators
  logging.info(
    "train: %d images, %s: %d images, vocabulary: %d words",
    len(run.train_split),
    run.eval_split.name,
    len(run.eval_split),
    run.tokenizer.vocab_size,
  )
  batches = run.batches()
  train_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "train"))
  eval_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "eval"))
  if int(step) == 0:
    summaries.write_config(train_writer, config)
    summaries.write_skipped(train_writer, (run.train_split, run.eval_split))

  history, last_eval = [], {}
  last_time, last_step = time.time(), int(step)
  try:
    while int(step) < train_config.num_steps:
      metrics = run.run_step(next(batches))
      step.assign_add(1)
      current = int(step)
      history.append(metrics)
      if current % train_config.log_every == 0 or current == train_config.num_steps:
        means = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
        if not np.isfinite(means["loss"]):
          raise FloatingPointError(
            f"Training loss is {means['loss']} at step {current}; stopping without saving. "
            f"The last good checkpoint is {manager.latest_checkpoint}. Try a lower "
            "config.train.learning_rate or config.train.grad_clip_norm."
          )
        elapsed = time.time() - last_time
        means["perplexity"] = float(np.exp(min(means["cross_entropy"], 50.0)))
        means["learning_rate"] = float(run.optimizer.learning_rate)
        means["steps_per_sec"] = (current - last_step) / elapsed
        means["examples_per_sec"] = means["steps_per_sec"] * train_config.batch_size
        summaries.write_scalars(train_writer, current, means, "train")
        logging.info(
          "step %d: %s", current, ", ".join(f"{k}={v:.4g}" for k, v in sorted(means.items()))
        )
        history, last_time, last_step = [], time.time(), current
      if evals and (current % train_config.eval_every == 0 or current == train_config.num_steps):
        last_eval = _evaluate(current, model, evals, eval_writer)
        last_time = time.time()  # evaluation time does not count against steps/sec
      if current % train_config.checkpoint_every == 0:
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
