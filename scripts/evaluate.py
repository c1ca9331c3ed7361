"""Evaluates a trained workdir, or scores a results file.

    python scripts/evaluate.py --workdir=DIR --split=test
    python scripts/evaluate.py --results=captions.json --references=captions_val2014.json

With a workdir: runs its evaluators on the split and writes DIR/eval/SPLIT/metrics.json,
captions.json and captions_per_image.csv. With --decode_method or --beam_size other than the
workdir's config, they go to DIR/eval/SPLIT_greedy, SPLIT_sample or SPLIT_beamK.

With --results: scores a COCO results file against COCO caption annotations (or a Karpathy-split
file) exactly as pycocoevalcap's COCOEvalCap does, with no model; prints the metrics and writes
them to --output (default: next to the results, *_metrics.json). --spice adds SPICE where its
models are installed.
"""

import json
import sys

from absl import app
from absl import flags

from captioning import decode_options
from captioning import runtime
from captioning.evaluators import results_file

# `captioning.evaluate` (TensorFlow) is imported in main() when a workdir is evaluated: scoring
# a results file needs no TensorFlow, so --results starts in about a second.

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_SPLIT = flags.DEFINE_string(
  "split", "test", "Which split of the workdir's dataset to caption and score."
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path; the latest if unset.")
_NUM_EXAMPLES = flags.DEFINE_integer(
  "num_examples", None, "Score only the first N images.", lower_bound=1
)
_DECODE_METHOD = flags.DEFINE_enum(
  "decode_method", None, list(decode_options.METHODS), "Decode this way instead of the workdir's."
)
_BEAM_SIZE = flags.DEFINE_integer(
  "beam_size", None, "Beam size instead of the workdir's.", lower_bound=1
)
_RESULTS = flags.DEFINE_string("results", None, "A COCO results file to score (no workdir).")
_REFERENCES = flags.DEFINE_string(
  "references", None, "COCO caption annotations (or a Karpathy-split file) for --results."
)
_OUTPUT = flags.DEFINE_string("output", None, "Where --results writes its metrics JSON.")
_SPICE = flags.DEFINE_bool("spice", False, "With --results: also SPICE, if its models are here.")


def score_results():
  if not _REFERENCES.value:
    raise app.UsageError("--results needs --references (COCO caption annotations).")
  if _WORKDIR.value:
    raise app.UsageError("Give either --workdir or --results, not both.")
  try:
    report = results_file.score_results_file(
      _RESULTS.value, _REFERENCES.value, spice=_SPICE.value, output=_OUTPUT.value
    )
  except results_file.ResultsFileError as e:
    sys.exit(f"error: {e}")
  print(json.dumps(report, indent=2))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _RESULTS.value:
    return score_results()
  if not _WORKDIR.value:
    raise app.UsageError("Give --workdir (a training workdir) or --results and --references.")
  from captioning import evaluate  # pylint: disable=import-outside-toplevel

  runtime.setup_process()
  evaluate.evaluate_workdir(
    _WORKDIR.value,
    _SPLIT.value,
    checkpoint=_CHECKPOINT.value,
    num_examples=_NUM_EXAMPLES.value,
    decode_method=_DECODE_METHOD.value,
    beam_size=_BEAM_SIZE.value,
  )


if __name__ == "__main__":
  app.run(main)
