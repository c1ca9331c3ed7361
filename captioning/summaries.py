"""TensorBoard content beyond scalars: sample captions as text, attention maps as images."""

import numpy as np
import tensorflow as tf

from captioning.data import tokenizer as tokenizer_lib


def attention_overlay(image, attention, feature_map_shape, num_words):
  """Draws the attention of each decoding step over the image.

  Args:
    image: uint8 [S, S, 3].
    attention: [T, L] weights of each step, L = H*W.
    feature_map_shape: (H, W) of the encoder's feature map.
    num_words: how many steps to draw (the caption's words and its `<end>`).

  Returns:
    uint8 [S, S * (num_words + 1), 3]: the image, then one panel per step where bright red marks
    the attended locations.
  """
  h, w = feature_map_shape
  size = image.shape[:2]
  steps = np.asarray(attention[:num_words], np.float32).reshape([-1, h, w, 1])
  maps = tf.image.resize(steps, size, method="bilinear").numpy()  # [T, S, S, 1]
  maps = maps / np.maximum(maps.max(axis=(1, 2, 3), keepdims=True), 1e-8)
  base = image.astype(np.float32) * 0.5
  heat = np.concatenate([maps * 255.0, maps * 64.0, np.zeros_like(maps)], axis=-1)
  panels = np.clip(base[None] + heat * 0.6, 0, 255).astype(np.uint8)
  return (
    np.concatenate([image[None].astype(np.uint8), panels], axis=0)
    .transpose(1, 0, 2, 3)
    .reshape(size[0], -1, 3)
  )


def samples_markdown(image_ids, predictions, references, finished=None):
  """A markdown table of generated captions beside their references."""
  rows = ["| image_id | generated | references |", "|---|---|---|"]
  for i, image_id in enumerate(image_ids):
    caption = predictions[int(image_id)]
    if finished is not None and not finished[i]:
      caption += " *(unfinished: no end token)*"
    refs = "<br>".join(references[int(image_id)])
    rows.append(f"| {int(image_id)} | {caption} | {refs} |")
  return "\n".join(rows)


def write_caption_samples(
  writer, step, prefix, split, predictions, attention, finished, feature_map_shape
):
  """Writes sample captions beside their references (text) and their attention maps (images).

  Args:
    writer: a tf.summary writer.
    step: the training step.
    prefix: the tag prefix, e.g. "val".
    split: a CaptionSplit of the sampled images (read here, a few at most).
    predictions: {image_id: caption}, covering the split.
    attention: [N, T, L] attention of each decoding step, for the split's images in order.
    finished: bool [N], False for captions cut at the length limit.
    feature_map_shape: (H, W) of the grid the attention is over.
  """
  ids = split.image_ids
  with writer.as_default(step=step):
    tf.summary.text(
      f"{prefix}/samples", samples_markdown(ids, predictions, split.references(), finished)
    )
    pictures = []
    for i, (image_id, image) in enumerate(zip(ids, split.images.pictures(range(len(ids))))):
      words = tokenizer_lib.split_words(predictions[int(image_id)])
      pictures.append(attention_overlay(image, attention[i], feature_map_shape, len(words) + 1))
    width = max(p.shape[1] for p in pictures)
    pictures = [np.pad(p, [(0, 0), (0, width - p.shape[1]), (0, 0)]) for p in pictures]
    tf.summary.image(f"{prefix}/attention", np.stack(pictures), max_outputs=len(ids))


def write_skipped(writer, splits):
  """Writes what each split's index left out (counts as scalars at step 0, examples as text)."""
  rows = ["| split | reason | images | first files |", "|---|---|---|---|"]
  with writer.as_default(step=0):
    for split in splits:
      for reason, entry in split.skipped.items():
        tf.summary.scalar(f"data/{split.name}_skipped_{reason}", entry["count"])
        rows.append(f"| {split.name} | {reason} | {entry['count']} | "
                    f"{'<br>'.join(entry['examples'])} |")  # fmt: skip
    if len(rows) > 2:
      tf.summary.text("data/skipped_images", "\n".join(rows))


def write_scalars(writer, step, metrics, prefix):
  with writer.as_default(step=step):
    for name, value in metrics.items():
      tf.summary.scalar(f"{prefix}/{name}", value)


def write_config(writer, config):
  with writer.as_default(step=0):
    tf.summary.text("config", "```\n" + config.to_json(indent=2, sort_keys=True) + "\n```")
