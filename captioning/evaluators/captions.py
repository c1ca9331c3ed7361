"""Decoded-caption quality: COCO caption metrics and, on `shapes`, fact accuracy."""

import ml_collections
import numpy as np

from captioning import decoding
from captioning.data import pipeline
from captioning.evaluators import coco_metrics
from captioning.evaluators import facts


def decode_split(decoder, tokenizer, split, batch_size):
  """Decodes every image of a split.

  Returns:
    (predictions {image_id: caption}, attention float32 [N, T, L], finished bool [N]).
  """
  predictions, attention, finished = {}, [], []
  for batch in pipeline.image_batches(split, batch_size):
    out = decoder(batch["image"])
    for image_id, caption in zip(batch["image_id"], tokenizer.decode_batch(out["tokens"].numpy())):
      predictions[int(image_id)] = caption
    attention.append(out["attention"].numpy().astype(np.float32))
    finished.append(out["finished"].numpy())
  return predictions, np.concatenate(attention), np.concatenate(finished)


class CaptionEvaluator:
  """Decodes a split and scores the captions against its references.

  The scores are those of real decoded captions (never teacher-forced), computed at corpus level
  with pycocoevalcap's PTB tokenizer and scorers, so they compare with published numbers.

  Args:
    split: a CaptionSplit.
    tokenizer: the workdir's tokenizer.
    max_decode_length: the most words a caption may have.
    decode_method: "greedy" or "beam" (see `decoding.build_decoder`).
    beam_size: hypotheses per image of beam search.
    batch_size: images per decoding batch.
    jit_compile: compile decoding with XLA.
    caption_metrics: which pycocoevalcap metrics to compute (all by default).
  """

  def __init__(
    self,
    split,
    tokenizer,
    max_decode_length,
    batch_size,
    jit_compile=False,
    caption_metrics=coco_metrics.SUPPORTED_METRICS,
    decode_method="greedy",
    beam_size=1,
    **unused,
  ):
    del unused
    self.caption_metrics = tuple(caption_metrics)
    self.split = split
    self.tokenizer = tokenizer
    self.decode = ml_collections.ConfigDict(
      {"method": decode_method, "max_length": max_decode_length, "beam_size": beam_size}
    )
    self.batch_size = batch_size
    self.jit_compile = jit_compile
    self._decoder = None
    # What the last `run` produced, kept for summaries and result files.
    self.predictions, self.attention, self.finished = {}, None, None
    self.warnings, self.tokenizer_name, self.skipped = [], None, {}

  def run(self, model):
    """Returns COCO metrics, fact accuracy (on `shapes`) and the share of unfinished captions."""
    if self._decoder is None or self._decoder.model is not model:
      self._decoder = decoding.build_decoder(
        self.decode, model, self.tokenizer, jit_compile=self.jit_compile
      )
    self.predictions, self.attention, self.finished = decode_split(
      self._decoder, self.tokenizer, self.split, self.batch_size
    )
    scored = coco_metrics.compute_caption_metrics(
      self.predictions, self.split.references(), metrics=self.caption_metrics
    )
    self.warnings, self.tokenizer_name = list(scored.warnings), scored.tokenizer
    self.skipped = dict(scored.skipped)
    metrics = dict(scored.scores)
    if self.split.scenes is not None:
      metrics.update(facts.fact_accuracy(self.predictions, self.split.scene_by_id()))
    metrics["unfinished_captions"] = float(1.0 - np.mean(self.finished))
    return metrics
