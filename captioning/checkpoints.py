"""Checkpoints beyond the run's rolling ones: the best by a validation metric, and one saved when a
signal stops training.

Why a crash never leaves a half-written checkpoint to resume from: `tf.train.CheckpointManager`
writes a checkpoint's data files to a temporary folder, renames them to `ckpt-N.data-*`, writes
`ckpt-N.index`, and only then rewrites its state file `checkpoint` (a temporary file, then a
rename), which is what `latest_checkpoint` and `restore_or_initialize` read. A process killed
at any moment leaves the state file naming the previous complete checkpoint or the new one; torn
`ckpt-N` files it does not name are never read, and are overwritten when step N is saved again.
(A rename survives a killed process; surviving a power cut would also need an fsync, which
TensorFlow does not do.)
"""

import json
import math
import os
import signal
import threading

from absl import logging
import tensorflow as tf

from captioning import files

BEST_MODES = ("max", "min")
# SIGTERM is what schedulers send before pre-empting a job; SIGINT is Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterruptedError(Exception):
  """Training stopped on a signal, after saving a checkpoint of its last finished step.

  Attributes:
    signum: the signal's number.
    step: the step the checkpoint holds.
    checkpoint: its path.
  """

  def __init__(self, signum, step, checkpoint):
    self.signum, self.step, self.checkpoint = signum, step, checkpoint
    super().__init__(
      f"Training stopped by {signal.Signals(signum).name} after step {step}; saved {checkpoint}. "
      "Rerun the same command to resume."
    )

  @property
  def exit_code(self):
    """128 + the signal's number, what a shell reports for a process the signal ended."""
    return 128 + self.signum


class StopSignals:
  """A context in which SIGTERM and SIGINT ask training to stop instead of ending the process.

  The first signal only sets `signum`; the loop reads it between steps, so the step in flight
  finishes and the checkpoint it saves holds whole steps. It also puts the previous handlers
  back, so a second signal acts as if training had installed none: SIGTERM ends the process at
  once, even inside a stuck step (a Python handler would wait for the step), and Ctrl-C raises
  KeyboardInterrupt; the last complete checkpoint is resumed from. Signals that were ignored
  (`SIG_IGN`, e.g. SIGINT of a background job) stay ignored.

  Python runs signal handlers only in the main thread, so elsewhere nothing is installed. On
  exit the previous handlers are restored.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      logging.info("Training outside the main thread: SIGTERM and SIGINT are left as they are.")
      return self
    for signum in STOP_SIGNALS:
      previous = signal.getsignal(signum)
      if previous is not signal.SIG_IGN:
        # None: a handler installed outside Python, which signal.signal cannot put back.
        self._previous[signum] = signal.SIG_DFL if previous is None else previous
        signal.signal(signum, self._handle)
    return self

  def _restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def __exit__(self, *exc_info):
    self._restore()

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    self._restore()
    logging.warning(
      "Received %s: stopping after the current step, with a checkpoint (a second signal stops "
      "at once, without one).",
      signal.Signals(signum).name,
    )


class BestCheckpoint:
  """The checkpoint of the best evaluation so far by one metric, in its own folder.

  The best value is a variable of the checkpoint, so value and weights are written together: a
  crash leaves both old or both new (see the module docstring), and a restart reads the value
  back. `best.json` beside it is a readable copy: {"metric", "mode", "value", "step",
  "checkpoint"}. The checkpoint has the run's structure (model, optimizers, step), so
  `experiment.restore(workdir, path)` and `scripts/evaluate.py --checkpoint=path` read it.

  Attributes:
    metric: the metric's name, as the evaluators report it.
    mode: "max" or "min": which values are better.
    value: the best value so far, or None before the first evaluation.
    step: the step it was measured at, or None.
  """

  def __init__(self, checkpoint, directory, metric, mode, read_directory=None):
    """Opens `directory`, reading back the best value so far.

    Args:
      checkpoint: a `tf.train.Checkpoint` of the run's objects for this use only (the best
        value is added to it).
      directory: where the checkpoint and `best.json` go.
      metric: the metric to compare.
      mode: "max" or "min".
      read_directory: where the best value so far is read from, if not `directory`: a
        multi-worker worker that is not the chief writes into a temporary folder but compares
        with the chief's best, so that all workers save alike.
    """
    if mode not in BEST_MODES:
      raise ValueError(f"Bad config: train.best_mode must be one of {BEST_MODES}, got {mode!r}")
    self.metric, self.mode, self.value, self.step = metric, mode, None, None
    self._variable = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="best_value")
    checkpoint.best_value = self._variable
    self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
    self.json_path = os.path.join(directory, "best.json")
    read_directory = read_directory or directory
    latest = tf.train.latest_checkpoint(read_directory)
    if latest is None:
      return
    read_json = os.path.join(read_directory, "best.json")
    if os.path.exists(read_json):  # absent after a crash between checkpoint and json
      with open(read_json) as f:
        recorded = json.load(f)
      if (recorded["metric"], recorded["mode"]) != (metric, mode):
        logging.warning(
          "%s holds the best checkpoint by %s (%s); this run keeps the best by %s (%s): its "
          "first evaluation replaces it.",
          read_directory,
          recorded["metric"],
          recorded["mode"],
          metric,
          mode,
        )
        return
    tf.train.Checkpoint(best_value=self._variable).read(latest).expect_partial()
    self.value = float(self._variable.numpy())
    self.step = int(latest.rsplit("-", 1)[1])  # `update` numbers checkpoints by step
    if read_directory == directory:
      self._write_json(latest)  # in case a crash came between the checkpoint and the json
    logging.info("Best %s so far: %.4f at step %d (%s)", metric, self.value, self.step, latest)

  def _better(self, value):
    if self.value is None:
      return True
    return value > self.value if self.mode == "max" else value < self.value

  def _write_json(self, path):
    files.write_json(
      self.json_path,
      {
        "metric": self.metric,
        "mode": self.mode,
        "value": self.value,
        "step": self.step,
        "checkpoint": os.path.basename(path),
      },
    )

  def update(self, step, metrics):
    """Saves the run as the best checkpoint if `metrics` beat the best so far.

    Args:
      step: the step the metrics were measured at.
      metrics: an evaluation's {name: value}.

    Returns:
      The new checkpoint's path, or None when the value is no better (or not finite).

    Raises:
      ValueError: the evaluators do not report the metric.
    """
    if self.metric not in metrics:
      raise ValueError(
        f"Bad config: train.best_metric {self.metric!r} is not reported by the evaluators of "
        f"config.eval.evaluators; they report {sorted(metrics)} ('' keeps no best checkpoint)."
      )
    value = float(metrics[self.metric])
    if not math.isfinite(value):
      logging.warning("%s is %s at step %d: not a best checkpoint.", self.metric, value, step)
      return None
    if not self._better(value):
      return None
    self._variable.assign(value)
    path = self.manager.save(checkpoint_number=step)
    self.value, self.step = value, int(step)
    self._write_json(path)
    logging.info("New best %s=%.4f at step %d: saved %s", self.metric, value, step, path)
    return path
