"""Captions your own images with a trained workdir.

    python scripts/caption.py --workdir=DIR photo.jpg 'holiday/*.png' [--attention_dir=OUT]

Prints one line per image: the path, a tab, the caption (and "[unfinished]" when it was cut at
the maximum length); with --n_best=N (beam search), the next N - 1 captions follow on indented
lines with their log-probabilities and scores. A file that cannot be read is reported on stderr
and skipped. With --attention_dir, writes OUT/<file name>.attention.png per image: the image,
then one panel per word with its attention map over the image.
"""

import sys

from absl import app
from absl import flags

from captioning import decode_options
from captioning import inference
from captioning import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path; the latest if unset.")
_DECODE_METHOD = flags.DEFINE_enum(
  "decode_method", None, list(decode_options.METHODS), "Decode this way instead of the workdir's."
)
_BEAM_SIZE = flags.DEFINE_integer(
  "beam_size", None, "Beam size instead of the workdir's.", lower_bound=1
)
_N_BEST = flags.DEFINE_integer(
  "n_best", None, "Print this many captions per image (beam search).", lower_bound=1
)
_ATTENTION_DIR = flags.DEFINE_string("attention_dir", None, "Write attention grids (PNG) here.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Images decoded together.", lower_bound=1)
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("Name at least one image file or glob pattern.")
  runtime.setup_process()
  try:
    results = inference.caption_files(
      _WORKDIR.value,
      argv[1:],
      checkpoint=_CHECKPOINT.value,
      decode_method=_DECODE_METHOD.value,
      beam_size=_BEAM_SIZE.value,
      n_best=_N_BEST.value,
      attention_dir=_ATTENTION_DIR.value,
      batch_size=_BATCH_SIZE.value,
    )
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  for result in results:
    if result.error:
      print(f"skipped {result.path}: {result.error}", file=sys.stderr)
    else:
      print(f"{result.path}\t{result.caption}{'' if result.finished else ' [unfinished]'}")
      for rank, (caption, log_prob, score, finished) in enumerate(result.n_best[1:], start=2):
        print(
          f"  {rank}.\t{caption}{'' if finished else ' [unfinished]'}\t"
          f"(log p {log_prob:.3f}, score {score:.3f})"
        )
  skipped = sum(1 for r in results if r.error)
  if skipped:
    print(f"{skipped} of {len(results)} skipped", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
