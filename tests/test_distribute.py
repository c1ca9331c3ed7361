"""The train step under tf.distribute.MirroredStrategy over two logical CPU devices.

Runs in a subprocess: logical devices must be configured before TensorFlow initialises, which
the rest of the suite has already done in this process.
"""

import os

import helpers

SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[2])
import helpers
from captioning import train
from captioning import trainer
config = helpers.load_config("smoke", **{
    "train.strategy": "mirrored", "train.num_steps": 6, "train.log_every": 3,
    "train.batch_size": 8, "data.num_train": 64, "data.bucket_length_multiple": 0,
    "data.num_val": 8, "data.num_test": 8,
    "data.num_compositional": 8, "eval.num_examples": 8, "eval.evaluators": {"perplexity": {}},
    "train.eval_every": 6})
metrics = train.train_and_evaluate(config, sys.argv[1])
strategy = trainer.create_strategy("mirrored")
print(json.dumps({"replicas": strategy.num_replicas_in_sync, **metrics}))
"""


def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  out = helpers.run_json_script(SCRIPT, tmp_path / "w", tests_dir)
  assert out["replicas"] == 2
  assert 0 < out["teacher_forced_loss"] < 5
  losses = helpers.read_scalars(str(tmp_path / "w" / "tensorboard" / "train"))["train/loss"]
  assert sorted(losses) == [3, 6]
