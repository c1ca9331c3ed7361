"""Two worker processes on 127.0.0.1 train with MultiWorkerMirroredStrategy (TF_CONFIG): a
SIGTERM to one stops both after the same step with the chief's checkpoint of it; rerun, they
resume from it, agree on the weights, match one process training on the same global batches,
and only the chief writes the workdir."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from captioning import experiment
from captioning import train
import helpers

CONFIG = {
  "train.num_steps": 4,
  "train.log_every": 2,
  "train.eval_every": 2,
  "train.checkpoint_every": 2,
  "train.batch_size": 8,
  "data.num_train": 64,
  "data.bucket_length_multiple": 0,  # one batch shape: one trace of the step
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "eval.num_examples": 8,
  "eval.evaluators": {"perplexity": {}},
  # Each replica draws the same dropout masks for its share of the batch, so a split batch
  # matches one process only without dropout.
  "model.decoder.init_dropout": 0.0,
}

# argv: workdir, tests folder, config overrides, the step before which the process sends
# itself SIGTERM (0: none).
_WORKER = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import helpers
from captioning import checkpoints, train, trainer
overrides, signal_at = json.loads(sys.argv[3]), int(sys.argv[4])
created, create = [], trainer.TrainingRun.create
def keep(config, workdir):
  run = create(config, workdir)
  created.append(run)
  run_step = run.run_step
  def step_and_signal(batch):
    if int(run.step) + 1 == signal_at:
      os.kill(os.getpid(), signal.SIGTERM)  # arrives during the step
    return run_step(batch)
  run.run_step = step_and_signal
  return run
trainer.TrainingRun.create = keep
bests, best_init = [], checkpoints.BestCheckpoint.__init__
def keep_best(self, *args, **kwargs):
  best_init(self, *args, **kwargs)
  bests.append([self.value, self.step])
checkpoints.BestCheckpoint.__init__ = keep_best
try:
  train.train_and_evaluate(helpers.load_config("smoke", **overrides), sys.argv[1])
  stopped = None
except checkpoints.TrainingInterruptedError as e:
  stopped = [e.exit_code, e.step]
run = created[0]
weights = [float(np.abs(v.numpy()).sum()) for v in run.model.trainable_variables]
print(json.dumps({"chief": run.chief, "write_dir": run.write_dir, "weights": weights,
                  "replicas": run.strategy.num_replicas_in_sync, "stopped": stopped,
                  "best_at_start": bests[0]}))
"""


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def weights_of(workdir):
  model = experiment.restore(workdir)[2]
  return [float(np.abs(v.numpy()).sum()) for v in model.trainable_variables]


def train_two_workers(workdir, signal_at=(0, 0)):
  """Runs the two workers to the end; their printed dicts, the chief's first."""
  cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
  overrides = json.dumps({**CONFIG, "train.strategy": "multi_worker_mirrored"})
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  workers = [
    subprocess.Popen(
      [sys.executable, "-c", _WORKER, workdir, tests_dir, overrides, str(signal_at[i])],
      cwd=helpers.ROOT,
      env=dict(
        os.environ,
        TF_CONFIG=json.dumps(
          {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}}
        ),
      ),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = []
  for worker in workers:
    stdout, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr[-3000:]
    outputs.append(json.loads(stdout.strip().splitlines()[-1]))
  return outputs


def checkpoint_files(workdir):
  return sorted(f for f in os.listdir(os.path.join(workdir, "checkpoints")) if "ckpt-" in f)


@pytest.mark.slow
def test_two_workers_stop_together_resume_agree_match_one_process_and_only_the_chief_writes(
  tmp_path,
):
  workdir = str(tmp_path / "w")
  # A scheduler pre-empts the worker that is not the chief during step 3: both finish it, save
  # it (the chief into the workdir) and stop, as after a SIGTERM of their own.
  outputs = train_two_workers(workdir, signal_at=(0, 3))
  assert [o["stopped"] for o in outputs] == [[128 + signal.SIGTERM, 3]] * 2
  assert checkpoint_files(workdir) == [
    "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-3.data-00000-of-00001", "ckpt-3.index"
  ]  # fmt: skip
  # Rerun, both resume from step 3, and the worker that is not the chief compares evaluations
  # with the chief's best checkpoint (of step 2), not with its empty temporary folder.
  outputs = train_two_workers(workdir)
  assert [o["stopped"] for o in outputs] == [None, None]
  assert outputs[0]["best_at_start"] == outputs[1]["best_at_start"]
  assert outputs[0]["best_at_start"][1] == 2
  chief, other = outputs
  assert (chief["chief"], other["chief"]) == (True, False)
  assert chief["replicas"] == other["replicas"] == 2
  assert chief["weights"] == other["weights"]  # the same update on both
  # Only the chief's files are kept: the other worker's temporary folder is gone.
  assert chief["write_dir"] == workdir and not os.path.exists(other["write_dir"])
  assert checkpoint_files(workdir) == [
    f"ckpt-{s}.{e}" for s in (2, 3, 4) for e in ("data-00000-of-00001", "index")
  ]
  np.testing.assert_allclose(weights_of(workdir), chief["weights"], rtol=1e-6)
  # One process on the same global batches (each worker read half of each) ends alike.
  alone = str(tmp_path / "alone")
  train.train_and_evaluate(helpers.load_config("smoke", **CONFIG), alone)
  # (Sums of |w| per variable: float32 sums taken in another order differ in the last digits,
  # which Adam's first steps carry into variables whose gradients are about zero.)
  np.testing.assert_allclose(weights_of(alone), chief["weights"], rtol=1e-4, atol=1e-5)
