"""Evaluates a training workdir on a split: `evaluate_workdir(workdir, split)`.

Runs the evaluators of the workdir's `config.eval.evaluators` (the ones training ran) on the
split, and writes WORKDIR/eval/SPLIT/metrics.json, each evaluator's result files (the captions
evaluator's captions.json in the COCO results format) and the metrics and samples to the
TensorBoard writer WORKDIR/tensorboard/eval_SPLIT.
"""

import os

from absl import logging
import tensorflow as tf

from captioning import decoding
from captioning import evaluators
from captioning import experiment
from captioning import features
from captioning import files
from captioning import summaries


def output_name(split, decode_config, method=None, beam_size=None):
  """The decoding a split is scored with and the results folder name it gets.

  The workdir's own decoding writes to eval/SPLIT; another writes to eval/SPLIT_greedy or
  eval/SPLIT_beamK (eval/SPLIT_sample), so no result is overwritten by another decoding's.

  Returns:
    (method, beam_size, folder name).
  """
  decode = decoding.override(decode_config, method, beam_size)
  method, beam_size = decode["method"], decode["beam_size"]
  if (method, beam_size) == (decode_config.method, decode_config.beam_size):
    return method, beam_size, split
  return method, beam_size, f"{split}_" + (f"beam{beam_size}" if method == "beam" else method)


def evaluate_workdir(
  workdir,
  split="test",
  *,
  checkpoint=None,
  num_examples=None,
  batch_size=None,
  decode_method=None,
  beam_size=None,
):
  """Scores a split with the workdir's model and evaluators.

  Args:
    workdir: a training workdir (config.json, tokenizer.json, checkpoints/).
    split: one of the dataset's splits (`shapes`: train, val, test, compositional).
    checkpoint: a checkpoint path; the latest when None.
    num_examples: score only the first this many images (all when None).
    batch_size: decoding batch size; `config.eval.batch_size` when None.
    decode_method: a `decode_options.METHODS` entry instead of the workdir's `config.decode.method`.
    beam_size: instead of the workdir's `config.decode.beam_size`.

  Returns:
    The report written to metrics.json: the metrics of every evaluator, what each reports
    about its run (e.g. the decoding), and the split, step and number of images.
  """
  config, tokenizer, model, step = experiment.restore(workdir, checkpoint)
  method, size, out_name = output_name(split, config.decode, decode_method, beam_size)
  with config.unlocked():
    config.decode.method, config.decode.beam_size = method, size
  dataset = features.open_dataset(config)
  data = dataset.split(split).take(num_examples)
  evals = evaluators.create_for_run(config, data, tokenizer, batch_size)
  out_dir = os.path.join(workdir, "eval", out_name)
  os.makedirs(out_dir, exist_ok=True)
  writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", f"eval_{out_name}"))
  metrics, report = {}, {}
  for evaluator in evals.values():
    metrics.update(evaluator.run(model))
    report.update(evaluator.report())
    evaluator.write_results(out_dir)
    evaluator.write_summaries(writer, step, split)
  report = {
    **metrics,
    **report,
    "split": split,
    "step": step,
    "num_images": len(data),
    "skipped_images": data.skipped,
  }
  files.write_json(os.path.join(out_dir, "metrics.json"), report)
  summaries.write_scalars(writer, step, metrics, split)
  writer.flush()
  logging.info(
    "%s at step %d: %s", split, step, ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
  )
  return report
