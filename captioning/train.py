"""The training loop: `train_and_evaluate(config, workdir)`.

The run (model, optimizer, checkpoint, data stream, train step) is built by
`trainer.TrainingRun.create`; this module loops over it, logging to separate train and eval
TensorBoard writers, running the evaluators of `config.eval.evaluators` every
`config.train.eval_every` steps, and checkpointing with the run's `tf.train.CheckpointManager`,
beside the best evaluation's checkpoint (`checkpoints.BestCheckpoint`). SIGTERM and SIGINT stop
it after the step in flight with a checkpoint (`checkpoints.StopSignals`).
"""

import os
import shutil
import time

from absl import logging
import numpy as np
import tensorflow as tf

from captioning import checkpoints
from captioning import config_checks
from captioning import experiment
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


# Counted over a logging window, not averaged: updates skipped for a non-finite loss or gradient
# (train.max_consecutive_skips in a row stop training) and float16 loss-scale overflows.
_COUNTS = ("skipped_nonfinite", "loss_scale_overflow")


def _window_means(history):
  """The logged values of a window of steps' metrics: means over the steps whose update was
  applied (a skipped step's loss is not a number), counts of skips and overflows."""
  applied = [
    h for h in history if not (float(h["skipped_nonfinite"]) or float(h["loss_scale_overflow"]))
  ]
  values = {k: float(np.sum([h[k] for h in history])) for k in _COUNTS}
  for k in history[0]:
    if k not in _COUNTS:
      values[k] = float(np.mean([h[k] for h in applied])) if applied else float("nan")
  return values


def _save(manager, step, saved):
  """Saves a checkpoint of `step` unless the last one saved (or resumed from) is of it; returns
  the latest checkpoint's path."""
  if saved != step:
    manager.save(checkpoint_number=step, check_interval=False)
  return manager.latest_checkpoint or tf.train.latest_checkpoint(manager.directory)


def _best_checkpoint(run):
  """The run's `checkpoints.BestCheckpoint`, or None when `train.best_metric` is ""."""
  train_config = run.config.train
  if not train_config.best_metric:
    return None
  return checkpoints.BestCheckpoint(
    experiment.training_checkpoint(run.model, run.optimizers, run.step),
    experiment.best_checkpoint_dir(run.write_dir),
    train_config.best_metric,
    train_config.best_mode,
    # Every worker compares with the chief's best, so all save (or not) alike.
    read_directory=experiment.best_checkpoint_dir(run.workdir),
  )


class _Profiler:
  """A TensorBoard profiler trace of the steps that take the step counter from START to STOP
  (`train.profile_steps`), written under `logdir`/plugins/profile/, where TensorBoard's Profile
  tab finds it."""

  def __init__(self, steps, logdir):
    self.steps, self.logdir, self.active = steps, logdir, False

  def before_step(self, step):
    if self.steps and not self.active and self.steps[0] <= step < self.steps[1]:
      tf.profiler.experimental.start(self.logdir)
      self.active = True

  def after_step(self, step):
    if self.active and step >= self.steps[1]:
      self.stop()

  def stop(self):
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
      logging.info("Wrote a profiler trace to %s", os.path.join(self.logdir, "plugins", "profile"))


def train_and_evaluate(config, workdir):
  """Trains the captioner a config describes, evaluating and checkpointing into `workdir`.

  Rerunning the same command resumes from the latest checkpoint in `workdir`; the data stream
  resumes at the same batch. A process killed at any moment resumes from its last complete
  checkpoint (`checkpoints` says why). With `train.best_metric`, the best evaluation's
  checkpoint is kept in WORKDIR/checkpoints/best/.

  SIGTERM or SIGINT (Ctrl-C) in the main thread stops training after the step in flight: a
  checkpoint of that step is saved (an evaluation due at it is skipped) and
  `checkpoints.TrainingInterruptedError` is raised. A second signal meets the previous handlers
  (SIGTERM ends the process at once, Ctrl-C raises KeyboardInterrupt), which are also restored
  on return.

  Args:
    config: a ConfigDict with the sections of `configs/shapes_sat.py`.
    workdir: where config, tokenizer, checkpoints, summaries and the final model go.

  Returns:
    The last evaluation's metrics (a dict of floats; empty if no evaluator ran).

  Raises:
    checkpoints.TrainingInterruptedError: a signal stopped training (`exit_code`: 128 + it).
  """
  run = trainer.TrainingRun.create(config, workdir)
  try:
    return _loop(run, config)
  finally:
    if not run.chief:  # a worker's temporary folder goes, however training ended
      shutil.rmtree(run.write_dir, ignore_errors=True)


def _loop(run, config):
  """`train_and_evaluate`'s loop over a built run."""
  model, step, manager, train_config = run.model, run.step, run.manager, config.train
  # The step of the last checkpoint saved or resumed from, the same on every worker (a worker
  # that is not the chief saves into an empty temporary folder).
  saved = int(step) if int(step) else None
  if manager.latest_checkpoint:
    logging.info("Resumed from %s at step %d", manager.latest_checkpoint, int(step))
  evals = run.evaluators
  best = _best_checkpoint(run)
  logging.info(
    "train: %d images, %s: %d images, vocabulary: %d words",
    len(run.train_split),
    run.eval_split.name,
    len(run.eval_split),
    run.tokenizer.vocab_size,
  )
  batches = run.batches()
  # Under MultiWorkerMirroredStrategy every worker runs this loop (evaluations included, so
  # that all save alike); only the chief writes into the workdir (run.write_dir).
  train_dir = os.path.join(run.write_dir, "tensorboard", "train")
  train_writer = tf.summary.create_file_writer(train_dir)
  eval_writer = tf.summary.create_file_writer(os.path.join(run.write_dir, "tensorboard", "eval"))
  if int(step) == 0:
    summaries.write_config(train_writer, config)
    summaries.write_skipped(train_writer, (run.train_split, run.eval_split))
  profiler = _Profiler(config_checks.profile_steps(train_config.profile_steps), train_dir)

  history, last_eval = [], {}
  last_time, last_step = time.time(), int(step)
  signum = None  # the stop signal all workers act on (`TrainingRun.agreed_stop`)
  with checkpoints.StopSignals() as stop:
    try:
      while int(step) < train_config.num_steps:
        profiler.before_step(int(step))
        with tf.profiler.experimental.Trace("train", step_num=int(step) + 1, _r=1):
          metrics = run.run_step(next(batches))
        step.assign_add(1)
        current = int(step)
        profiler.after_step(current)
        history.append(metrics)
        signum = run.agreed_stop(stop.signum)
        if current % train_config.log_every == 0 or current == train_config.num_steps:
          means = _window_means(history)
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
        if signum is not None and current < train_config.num_steps:
          break  # no evaluation: a pre-emption's grace period is short
        evaluate_now = evals and (
          current % train_config.eval_every == 0 or current == train_config.num_steps
        )
        if evaluate_now:
          last_eval = _evaluate(current, model, evals, eval_writer)
          last_time = time.time()  # evaluation time does not count against steps/sec
        if current % train_config.checkpoint_every == 0:
          manager.save(checkpoint_number=current, check_interval=False)
          saved = current
        if evaluate_now and best:
          best.update(current, last_eval)
    finally:
      profiler.stop()
      train_writer.flush()
    if signum is not None and int(step) < train_config.num_steps:
      path = _save(manager, int(step), saved)
      raise checkpoints.TrainingInterruptedError(signum, int(step), path)
  _save(manager, int(step), saved)
  model.save(os.path.join(run.write_dir, "model.keras"))
  return last_eval
