"""Checkpoints that outlive accidents: the best by a metric, a stop on SIGTERM, a kill -9.

The subprocess tests run scripts/train.py as a user would and signal it once it has logged
some steps; the runs are tiny, but each process spends most of its time starting TensorFlow
and tracing the train step.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from captioning import checkpoints
from captioning import experiment
from captioning import train
import helpers

TINY = {
  "data.num_train": 200,
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "data.max_objects": 1,
  "data.max_caption_length": 12,
  "data.bucket_length_multiple": 0,  # one batch shape: one trace of the train step
  "decode.max_length": 12,
  # With dropout: its draws, like the data, are a pure function of (seed, step).
  "model": helpers.model_sections(decoder={"dropout": 0.3, "init_dropout": 0.5}),
  "train.batch_size": 8,
  "train.num_steps": 60,
  "train.warmup_steps": 5,
  "train.log_every": 1,  # each finished step is logged: the test knows where the trainer is
  "train.checkpoint_every": 10,
  "train.eval_every": 1000,
  "eval.num_examples": 8,
  "eval.batch_size": 8,
  "eval.evaluators": {"perplexity": {}},
}

_CONFIG_FILE = """
import sys
sys.path.insert(0, {tests!r})
import helpers


def get_config(arg=None):
  del arg
  return helpers.load_config("smoke", **{overrides!r})
"""
_STEP_LOGGED = re.compile(r"train\.py:\d+\] step (\d+): ")


class Trainer:
  """scripts/train.py in a subprocess, sent `signum` once it has logged step `after_step`."""

  def __init__(self, tmp_path, workdir, overrides, signum, after_step):
    config = tmp_path / f"config_{os.path.basename(workdir)}.py"  # one per trainer
    config.write_text(_CONFIG_FILE.format(tests=os.path.dirname(__file__), overrides=overrides))
    self.process = subprocess.Popen(
      [sys.executable, "scripts/train.py", f"--config={config}", f"--workdir={workdir}"],
      cwd=helpers.ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
      stderr=subprocess.PIPE,
      text=True,
    )
    self.signum, self.after_step = signum, after_step
    self.steps, self.lines = [], []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.process.stderr:
      self.lines.append(line)
      match = _STEP_LOGGED.search(line)
      if match:
        self.steps.append(int(match.group(1)))
        if self.steps[-1] == self.after_step:
          self.process.send_signal(self.signum)

  def wait(self):
    """Waits for the trainer to end; returns its exit status."""
    try:
      status = self.process.wait(timeout=180)
    finally:
      self.process.kill()  # nothing if it ended
      self._reader.join()
    return status


def latest_step(workdir):
  latest = tf.train.latest_checkpoint(experiment.checkpoint_dir(workdir))
  return int(latest.rsplit("-", 1)[1])


def start_steps(workdir):
  with open(os.path.join(workdir, "provenance.json")) as f:
    return [run["start_step"] for run in json.load(f)]


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_complete_checkpoint_to_the_same_weights(tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  trainer = Trainer(tmp_path, killed, TINY, signal.SIGKILL, after_step=15)
  # Meanwhile, the uninterrupted run. Every run here is a scripts/train.py process: weights are
  # compared bit for bit, and a process of the suite may use another number of threads
  # (tests/conftest.py), which changes how sums are split.
  straight_run = Trainer(tmp_path, straight, TINY, None, None)
  assert straight_run.wait() == 0, "".join(straight_run.lines[-20:])
  status = trainer.wait()
  assert status == -signal.SIGKILL, "".join(trainer.lines[-20:])
  assert 15 <= trainer.steps[-1] < 60
  assert not os.path.exists(os.path.join(killed, "model.keras"))
  resume_at = latest_step(killed)
  assert resume_at >= 10 and resume_at % 10 == 0
  # A kill in the middle of saving the next checkpoint leaves its files torn and the state file
  # naming the last complete one; torn files are never read.
  torn = os.path.join(experiment.checkpoint_dir(killed), f"ckpt-{resume_at + 10}")
  with open(torn + ".index", "wb") as f:
    f.write(b"\x00torn")
  with open(torn + ".data-00000-of-00001", "wb") as f:
    f.write(b"\x00torn")

  resumed_run = Trainer(tmp_path, killed, TINY, None, None)  # the same command again
  assert resumed_run.wait() == 0, "".join(resumed_run.lines[-20:])
  assert start_steps(killed) == [0, resume_at]
  _, _, expected, expected_step = experiment.restore(straight)
  _, _, resumed, resumed_step = experiment.restore(killed)
  assert resumed_step == expected_step == 60
  for want, got in zip(expected.weights, resumed.weights, strict=True):
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)


@pytest.mark.slow
def test_with_op_determinism_two_runs_log_identical_losses(tmp_path):
  overrides = dict(TINY, **{"train.num_steps": 5, "train.deterministic": True})
  # Side by side: most of each process's time is single-threaded start-up and tracing.
  runs = {name: Trainer(tmp_path, str(tmp_path / name), overrides, None, None) for name in "ab"}
  losses = []
  for name, run in runs.items():
    assert run.wait() == 0, "".join(run.lines[-20:])
    scalars = helpers.read_scalars(str(tmp_path / name / "tensorboard" / "train"))
    losses.append(scalars["train/loss"])
  assert sorted(losses[0]) == list(range(1, 6)) and losses[0] == losses[1]


@pytest.mark.slow
def test_sigterm_saves_the_step_in_flight_and_exits_with_128_plus_the_signal(tmp_path):
  workdir = str(tmp_path / "w")
  overrides = dict(TINY, **{"train.checkpoint_every": 1000})  # only the signal saves
  trainer = Trainer(tmp_path, workdir, overrides, signal.SIGTERM, after_step=5)
  status = trainer.wait()
  log = "".join(trainer.lines)
  assert status == 128 + signal.SIGTERM, log[-3000:]
  last = trainer.steps[-1]  # the last step that finished
  assert 5 <= last < 60
  assert latest_step(workdir) == last
  assert f"Training stopped by SIGTERM after step {last}; saved " in log
  assert "Rerun the same command to resume." in log

  train.train_and_evaluate(helpers.load_config(**overrides), workdir)
  assert start_steps(workdir) == [0, last]
  assert latest_step(workdir) == 60
  losses = helpers.read_scalars(os.path.join(workdir, "tensorboard", "train"))["train/loss"]
  assert sorted(losses) == list(range(1, 61))


def test_the_best_checkpoint_is_kept_beside_the_latest_and_read_back(tmp_path):
  workdir = str(tmp_path / "w")
  # Perplexity falls as training goes, so "max" keeps an early checkpoint, not the latest.
  overrides = dict(
    TINY,
    **{"train.num_steps": 20, "train.eval_every": 5, "train.best_mode": "max"},
  )
  config = helpers.load_config(**overrides)
  train.train_and_evaluate(config, workdir)
  evals = helpers.read_scalars(os.path.join(workdir, "tensorboard", "eval"))["val/perplexity"]
  assert sorted(evals) == [5, 10, 15, 20]
  best_step = max(evals, key=evals.get)
  best_dir = experiment.best_checkpoint_dir(workdir)
  with open(os.path.join(best_dir, "best.json")) as f:
    record = json.load(f)
  assert record == {
    "metric": "perplexity",
    "mode": "max",
    "value": pytest.approx(evals[best_step], rel=1e-6),
    "step": best_step,
    "checkpoint": f"ckpt-{best_step}",
  }
  assert sorted(f for f in os.listdir(best_dir) if f.endswith(".index")) == [
    f"ckpt-{best_step}.index"
  ]
  assert latest_step(workdir) == 20
  # Evaluation reads it like any checkpoint of the run.
  _, _, model, step = experiment.restore(workdir, os.path.join(best_dir, f"ckpt-{best_step}"))
  assert step == best_step

  # On restart the best so far is read back from the checkpoint, and only a better value
  # replaces it.
  def reopen(metric="perplexity", mode="max"):
    optimizers = experiment.build_optimizers(config, model)
    objects = experiment.training_checkpoint(model, optimizers, tf.Variable(0, dtype=tf.int64))
    return checkpoints.BestCheckpoint(objects, best_dir, metric, mode)

  best = reopen()
  assert (best.value, best.step) == (record["value"], best_step)
  assert best.update(30, {"perplexity": best.value - 1.0}) is None
  assert best.update(40, {"perplexity": float("nan")}) is None
  assert best.update(50, {"perplexity": best.value + 1.0}).endswith("best/ckpt-50")
  assert sorted(f for f in os.listdir(best_dir) if f.endswith(".index")) == ["ckpt-50.index"]
  assert reopen().step == 50
  # A best checkpoint chosen by another metric is replaced by the first evaluation.
  assert reopen("teacher_forced_loss", "min").value is None
  # A metric the evaluators do not report fails at the first evaluation, naming those they do.
  with pytest.raises(ValueError, match=r"'CIDEr' is not reported .* \['perplexity', "):
    reopen("CIDEr").update(60, {"perplexity": 3.0, "teacher_forced_loss": 1.0})


def test_signal_handlers_are_installed_only_in_the_main_thread_and_restored():
  before = {s: signal.getsignal(s) for s in checkpoints.STOP_SIGNALS}
  with checkpoints.StopSignals() as stop:
    assert all(signal.getsignal(s) != before[s] for s in checkpoints.STOP_SIGNALS)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM
    # A second signal meets the previous handlers (a second SIGTERM would end pytest).
    assert {s: signal.getsignal(s) for s in checkpoints.STOP_SIGNALS} == before
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert {s: signal.getsignal(s) for s in checkpoints.STOP_SIGNALS} == before

  seen = []

  def in_a_thread():
    with checkpoints.StopSignals():
      seen.append({s: signal.getsignal(s) for s in checkpoints.STOP_SIGNALS})

  thread = threading.Thread(target=in_a_thread)
  thread.start()
  thread.join()
  assert seen == [before]
