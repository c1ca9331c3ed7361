"""Trains a captioner: python scripts/train.py --config=configs/shapes_sat.py --workdir=DIR.

Override any config value with --config.section.key=value, e.g. --config.train.num_steps=200.
Rerunning the same command resumes from the latest checkpoint in DIR. SIGTERM or Ctrl-C saves a
checkpoint after the step in flight and exits with status 128 + the signal (143, 130), as if the
signal had ended the process, so schedulers and `make train` treat the run as unfinished.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from captioning import checkpoints
from captioning import runtime
from captioning import train

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.setup_process(deterministic=_CONFIG.value.train.deterministic)
  logging.info("Config:\n%s", _CONFIG.value)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except checkpoints.TrainingInterruptedError as stopped:
    logging.warning("%s", stopped)
    return stopped.exit_code
  return 0


if __name__ == "__main__":
  app.run(main)
