"""Evaluates a trained workdir: python scripts/evaluate.py --workdir=DIR --split=test.

Runs the workdir's evaluators on the split and writes DIR/eval/SPLIT/metrics.json and
DIR/eval/SPLIT/captions.json. With --decode_method or --beam_size other than the workdir's
config, they go to DIR/eval/SPLIT_greedy or SPLIT_beamK.
"""

from absl import app
from absl import flags

from captioning import decoding
from captioning import evaluate
from captioning import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_SPLIT = flags.DEFINE_string(
  "split", "test", "Which split of the workdir's dataset to caption and score."
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path; the latest if unset.")
_NUM_EXAMPLES = flags.DEFINE_integer(
  "num_examples", None, "Score only the first N images.", lower_bound=1
)
_DECODE_METHOD = flags.DEFINE_enum(
  "decode_method", None, list(decoding.METHODS), "Decode this way instead of the workdir's."
)
_BEAM_SIZE = flags.DEFINE_integer(
  "beam_size", None, "Beam size instead of the workdir's.", lower_bound=1
)
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
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
