"""Runs a config's frozen backbone over every split once and caches the grids.

    python scripts/precompute_features.py --config=configs/flickr8k_sat.py --output=DIR \
      --config.data.annotations=... --config.data.image_root=...
    python scripts/train.py --config=configs/flickr8k_sat.py --config.data.features=DIR ...

Interrupted, the same command continues where it stopped.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from captioning import features
from captioning import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_OUTPUT = flags.DEFINE_string("output", None, "The cache folder (config.data.features then).")
_DTYPE = flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Stored precision.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.", lower_bound=1)
flags.mark_flags_as_required(["config", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.setup_process()
  summary = features.precompute(
    _CONFIG.value, _OUTPUT.value, dtype=_DTYPE.value, batch_size=_BATCH_SIZE.value
  )
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
