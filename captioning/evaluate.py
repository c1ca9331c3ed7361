"""Evaluates a training workdir on a split: `evaluate_workdir(workdir, split)`.

Writes WORKDIR/eval/SPLIT/captions.json (COCO results format) and metrics.json, and the metrics
to the TensorBoard writer WORKDIR/tensorboard/eval_SPLIT. On `shapes`, metrics.json also holds
the teacher-forced relation probe (`evaluators/relations.py`) beside the decoded-caption scores.
"""

import json
import os

from absl import logging
import tensorflow as tf

from captioning import config_checks
from captioning import experiment
from captioning import summaries
from captioning.data import datasets
from captioning.evaluators import captions as captions_eval
from captioning.evaluators import relations


def _write_json(path, payload):
  with open(path + ".tmp", "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(path + ".tmp", path)


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
  """Decodes a split with the workdir's model and scores the captions.

  Args:
    workdir: a training workdir (config.json, tokenizer.json, checkpoints/).
    split: "train", "val", "test" or "compositional".
    checkpoint: a checkpoint path; the latest when None.
    num_examples: score only the first this many images (all when None).
    batch_size: decoding batch size; `config.eval.batch_size` when None.
    decode_method: "greedy" or "beam" instead of the workdir's `config.decode.method`.
    beam_size: instead of the workdir's `config.decode.beam_size`.

  Returns:
    The metrics dict written to metrics.json: in DIR/eval/SPLIT with the workdir's decoding,
    else in DIR/eval/SPLIT_greedy or DIR/eval/SPLIT_beamK, so no result is overwritten by
    another decoding's.
  """
  config, tokenizer, model, step = experiment.restore(workdir, checkpoint)
  decode = config.decode
  method, size = decode_method or decode.method, beam_size or decode.beam_size
  out_name = split
  if (method, size) != (decode.method, decode.beam_size):
    out_name = f"{split}_" + ("greedy" if method == "greedy" else f"beam{size}")
  with config.unlocked():
    decode.method, decode.beam_size = method, size
  config_checks.validate(config)
  data = datasets.load_split(config.data, split, seed=config.seed).take(num_examples)
  evaluator = captions_eval.CaptionEvaluator(
    data,
    tokenizer,
    config.decode.max_length,
    batch_size or config.eval.batch_size,
    jit_compile=config.train.jit_compile,
    decode_method=config.decode.method,
    beam_size=config.decode.beam_size,
  )
  metrics = evaluator.run(model)
  if data.scenes is not None:  # `shapes`: also ask the model about relations directly
    metrics.update(
      relations.RelationEvaluator(
        data, tokenizer, config.data.max_caption_length, batch_size or config.eval.batch_size
      ).run(model)
    )
  for warning in evaluator.warnings:
    logging.warning("%s", warning)

  out_dir = os.path.join(workdir, "eval", out_name)
  os.makedirs(out_dir, exist_ok=True)
  _write_json(
    os.path.join(out_dir, "captions.json"),
    [{"image_id": i, "caption": c} for i, c in evaluator.predictions.items()],
  )
  report = {
    **metrics,
    "split": split,
    "step": step,
    "num_images": len(data),
    "decode_method": config.decode.method,
    "beam_size": config.decode.beam_size,
    "tokenizer": evaluator.tokenizer_name,
    "skipped_metrics": evaluator.skipped,
  }
  _write_json(os.path.join(out_dir, "metrics.json"), report)

  writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", f"eval_{out_name}"))
  summaries.write_scalars(writer, step, metrics, split)
  summaries.write_caption_samples(
    writer, step, data, evaluator, model.feature_map_shape, config.eval.num_samples, split
  )
  writer.flush()
  logging.info(
    "%s at step %d: %s", split, step, ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
  )
  return report
