"""Two worker processes on 127.0.0.1 train with MultiWorkerMirroredStrategy (TF_CONFIG): they
agree on the weights, match one process training on the same global batches, and only the
chief writes the workdir."""

import json
import os
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
  "train.eval_every": 4,
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

_WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import helpers
from captioning import train, trainer
overrides = json.loads(sys.argv[3])
created, create = [], trainer.TrainingRun.create
def keep(config, workdir):
  created.append(create(config, workdir))
  return created[-1]
trainer.TrainingRun.create = keep
train.train_and_evaluate(helpers.load_config("smoke", **overrides), sys.argv[1])
run = created[0]
weights = [float(np.abs(v.numpy()).sum()) for v in run.model.trainable_variables]
print(json.dumps({"chief": run.chief, "write_dir": run.write_dir, "weights": weights,
                  "replicas": run.strategy.num_replicas_in_sync}))
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


@pytest.mark.slow
def test_two_workers_agree_match_one_process_and_only_the_chief_writes(tmp_path):
  workdir = str(tmp_path / "w")
  cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
  overrides = json.dumps({**CONFIG, "train.strategy": "multi_worker_mirrored"})
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  workers = [
    subprocess.Popen(
      [sys.executable, "-c", _WORKER, workdir, tests_dir, overrides],
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
  chief, other = outputs
  assert (chief["chief"], other["chief"]) == (True, False)
  assert chief["replicas"] == other["replicas"] == 2
  assert chief["weights"] == other["weights"]  # the same update on both
  # Only the chief's files are kept: the other worker's temporary folder is gone.
  assert chief["write_dir"] == workdir and not os.path.exists(other["write_dir"])
  assert sorted(f for f in os.listdir(os.path.join(workdir, "checkpoints")) if "ckpt-" in f) == [
    "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001", "ckpt-4.index"
  ]  # fmt: skip
  np.testing.assert_allclose(weights_of(workdir), chief["weights"], rtol=1e-6)
  # One process on the same global batches (each worker read half of each) ends alike.
  alone = str(tmp_path / "alone")
  train.train_and_evaluate(helpers.load_config("smoke", **CONFIG), alone)
  # (Sums of |w| per variable: float32 sums taken in another order differ in the last digits,
  # which Adam's first steps carry into variables whose gradients are about zero.)
  np.testing.assert_allclose(weights_of(alone), chief["weights"], rtol=1e-4, atol=1e-5)
