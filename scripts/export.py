"""Exports a trained workdir as a SavedModel that captions encoded images.

    python scripts/export.py --workdir=DIR --output=EXPORT [--decode_method=greedy] [--beam_size=K]

Load it anywhere TensorFlow runs, without this package:

    serve = tf.saved_model.load(EXPORT).signatures["serving_default"]
    out = serve(images=tf.constant([open("photo.jpg", "rb").read()]))
    out["caption"], out["log_prob"], out["score"], out["finished"], out["tokens"]

Images are decoded and resized in the graph as the workdir's dataset resizes a user's files; an
image that cannot be decoded fails the whole call (captioning/export.py). EXPORT must be new or
empty; --overwrite replaces a previous export there.
"""

import sys

from absl import app
from absl import flags

from captioning import decode_options
from captioning import export
from captioning import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_OUTPUT = flags.DEFINE_string("output", None, "The SavedModel folder to write.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path; the latest if unset.")
_DECODE_METHOD = flags.DEFINE_enum(
  "decode_method", None, list(decode_options.METHODS), "Decode this way instead of the workdir's."
)
_BEAM_SIZE = flags.DEFINE_integer(
  "beam_size", None, "Beam size instead of the workdir's.", lower_bound=1
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a previous export in --output.")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.setup_process()
  try:
    info = export.export(
      _WORKDIR.value,
      _OUTPUT.value,
      checkpoint=_CHECKPOINT.value,
      decode_method=_DECODE_METHOD.value,
      beam_size=_BEAM_SIZE.value,
      overwrite=_OVERWRITE.value,
    )
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    sys.exit(f"error: {e}")
  decode = info["decode"]
  print(f"Exported step {info['step']} ({decode['method']}, beam size {decode['beam_size']}, "
        f"{info['image_size']} px {info['resize_mode']}) to {_OUTPUT.value}")  # fmt: skip


if __name__ == "__main__":
  app.run(main)
