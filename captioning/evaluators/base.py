"""What every evaluator offers; only `run` is required."""


class Evaluator:
  """Scores a model on the split it was built with.

  `run` computes the numbers; the other methods let an evaluator add what only it has to
  TensorBoard, to the result files of `scripts/evaluate.py` and to `metrics.json`, so the
  training loop and the evaluation script treat every evaluator alike.
  """

  def run(self, model):
    """Returns {metric name: float}."""
    raise NotImplementedError

  def write_summaries(self, writer, step, prefix):
    """Writes TensorBoard content beyond the scalars of the last `run` (e.g. samples)."""
    del writer, step, prefix

  def write_results(self, out_dir):
    """Writes the files of the last `run` (e.g. captions.json) into `out_dir`."""
    del out_dir

  def report(self):
    """Facts about the last `run` for metrics.json that are not metrics (e.g. the decoding)."""
    return {}
