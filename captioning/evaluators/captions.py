"""Decoded-caption quality: the COCO caption metrics and the dataset's own caption scores."""

import csv
import io
import os

import numpy as np

from captioning import decoding
from captioning import files
from captioning import summaries
from captioning.data import pipeline
from captioning.evaluators import base
from captioning.evaluators import coco_metrics


def decode_split(search, tokenizer, split, batch_size):
  """Decodes every image of a split.

  Returns:
    (predictions {image_id: caption}, attention float32 [N, T, L], finished bool [N]).
  """
  predictions, attention, finished = {}, [], []
  for batch in pipeline.image_batches(split, batch_size):
    out = search(batch)  # pixels, or cached features
    ids = batch["image_id"].numpy()
    for image_id, caption in zip(ids, tokenizer.decode_batch(out["tokens"].numpy())):
      predictions[int(image_id)] = caption
    attention.append(out["attention"].numpy().astype(np.float32))
    finished.append(out["finished"].numpy())
  return predictions, np.concatenate(attention), np.concatenate(finished)


class CaptionEvaluator(base.Evaluator):
  """Decodes a split and scores the captions against its references.

  The scores are those of real decoded captions (never teacher-forced), computed at corpus level
  with pycocoevalcap's PTB tokenizer and scorers, so they compare with published numbers; the
  dataset adds what its ground truth allows (`CaptionSplit.score_captions`, e.g. fact accuracy
  on `shapes`).

  Args:
    split: a CaptionSplit.
    tokenizer: the workdir's tokenizer.
    decode: the `config.decode` section (see `decoding.Search`).
    batch_size: images per decoding batch.
    jit_compile: compile decoding with XLA.
    metrics: which pycocoevalcap metrics to compute.
    num_samples: captions and attention maps written to TensorBoard.
  """

  def __init__(
    self,
    split,
    tokenizer,
    decode,
    batch_size,
    jit_compile=False,
    metrics=coco_metrics.SUPPORTED_METRICS,
    num_samples=6,
  ):
    self.metrics = coco_metrics.check_metrics(metrics)
    if num_samples < 0:
      raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    self.num_samples = num_samples
    self.split = split
    self.tokenizer = tokenizer
    self.decode = dict(decode)
    self.batch_size = batch_size
    self.jit_compile = jit_compile
    self._search = None
    # What the last `run` produced, for summaries and result files.
    self.predictions, self.attention, self.finished = {}, None, None
    self.scored, self.feature_map_shape = None, None

  def run(self, model):
    """Returns COCO metrics, the dataset's caption scores and the share of unfinished captions."""
    if self._search is None or self._search.model is not model:
      self._search = decoding.build_search(
        self.decode, model, self.tokenizer, jit_compile=self.jit_compile
      )
    self.feature_map_shape = model.feature_map_shape
    self.predictions, self.attention, self.finished = decode_split(
      self._search, self.tokenizer, self.split, self.batch_size
    )
    self.scored = coco_metrics.compute_caption_metrics(
      self.predictions, self.split.references(), metrics=self.metrics
    )
    metrics = dict(self.scored.scores)
    metrics.update(self.split.score_captions(self.predictions))
    metrics["unfinished_captions"] = float(1.0 - np.mean(self.finished))
    return metrics

  def write_summaries(self, writer, step, prefix):
    """Sample captions beside their references (text) and their attention maps (images)."""
    n = min(self.num_samples, len(self.split))
    if n and self.attention is not None:
      summaries.write_caption_samples(
        writer,
        step,
        prefix,
        self.split.take(n),
        self.predictions,
        self.attention[:n],
        self.finished[:n],
        self.feature_map_shape,
      )

  def write_results(self, out_dir):
    """captions.json in the COCO results format, [{"image_id", "caption"}], and
    captions_per_image.csv: each image's caption, whether it finished, its per-image metrics
    and the dataset's verdicts (fact accuracy on `shapes`)."""
    files.write_json(
      os.path.join(out_dir, "captions.json"),
      [{"image_id": i, "caption": c} for i, c in self.predictions.items()],
    )
    per_image = self.scored.per_image if self.scored else {}
    position = {i: k for k, i in enumerate(self.scored.image_ids)} if self.scored else {}
    verdicts = self.split.caption_verdicts(self.predictions)
    verdict_columns = sorted({key for row in verdicts.values() for key in row})
    columns = ["image_id", "caption", "finished", *per_image, *verdict_columns]
    table = io.StringIO()
    writer = csv.DictWriter(table, columns)
    writer.writeheader()
    for k, (image_id, caption) in enumerate(self.predictions.items()):
      row = {"image_id": image_id, "caption": caption, "finished": int(self.finished[k])}
      for name, values in per_image.items():
        row[name] = f"{values[position[image_id]]:.6g}"
      row.update(verdicts.get(image_id, {}))
      writer.writerow(row)
    files.write_text(os.path.join(out_dir, "captions_per_image.csv"), table.getvalue())

  def report(self):
    return {
      "decode_method": self.decode["method"],
      "beam_size": self.decode["beam_size"],
      "tokenizer": self.scored.tokenizer if self.scored else None,
      "skipped_metrics": dict(self.scored.skipped) if self.scored else {},
    }
