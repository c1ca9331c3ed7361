"""Captions image files with a trained workdir, optionally drawing where each word looked.

    python scripts/caption.py --workdir=DIR photo.jpg 'more/*.png' [--attention_dir=OUT]

Images of any format the input pipeline reads (JPEG, PNG, GIF, BMP, WebP) and any size are
resized as the workdir's dataset resizes them; a file that cannot be read is reported and
skipped, never a crash.
"""

import dataclasses
import glob
import os

from absl import logging
import numpy as np

from captioning import decoding
from captioning import experiment
from captioning.data import datasets
from captioning.data import images as images_lib


@dataclasses.dataclass
class Captioned:
  """One input path's outcome: a caption, or why it has none.

  Attributes:
    path: the file.
    caption: the decoded caption ("" when skipped).
    log_prob: the caption's summed log-probability under the model.
    finished: whether the caption ended with `<end>` (False: cut at max_length).
    error: why the file was skipped, or None.
    attention_png: where its attention grid was written, or None.
    n_best: with n_best > 1, the beam's best captions as (caption, log_prob, score, finished),
      best first (the first is the caption above); score is what the search ranks by (log_prob
      over the length penalty).
  """

  path: str
  caption: str = ""
  log_prob: float = 0.0
  finished: bool = False
  error: str | None = None
  attention_png: str | None = None
  n_best: list = dataclasses.field(default_factory=list)


def expand(patterns):
  """Paths and glob patterns -> (files in the order given, [Captioned errors for patterns that
  match nothing])."""
  files, errors = [], []
  for pattern in patterns:
    matches = sorted(glob.glob(os.path.expanduser(pattern)))
    if not matches and not glob.has_magic(pattern):
      matches = [pattern]  # a plain path: check_file says what is wrong with it
    if not matches:
      errors.append(Captioned(pattern, error="no file matches this pattern"))
    files.extend(m for m in matches if m not in files)
  return files, errors


def attention_grid(path, image, words, attention, feature_map_shape):
  """Writes a PNG: the image, then one panel per word with its attention map over the image.

  Args:
    path: the PNG to write.
    image: uint8 [S, S, 3], as the model saw it.
    words: the caption's words, then "<end>" if it finished.
    attention: [T, H*W] attention weights of each step (T >= len(words)).
    feature_map_shape: (H, W).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  h, w = feature_map_shape
  size = image.shape[0]
  panels = len(words) + 1
  columns = min(panels, 6)
  rows = -(-panels // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
  for axis in axes.flat:
    axis.axis("off")
  axes.flat[0].imshow(image)
  axes.flat[0].set_title("input", fontsize=9)
  # Each location's weight covers its cell of the grid: the map stretched over the image.
  extent = (-0.5, size - 0.5, size - 0.5, -0.5)
  for k, word in enumerate(words):
    axis = axes.flat[k + 1]
    axis.imshow(image)
    weights = np.asarray(attention[k], np.float32).reshape(h, w)
    axis.imshow(weights, cmap="inferno", alpha=0.6, extent=extent, interpolation="bilinear")
    axis.set_title(word, fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=80)
  plt.close(figure)


def caption_files(
  workdir,
  patterns,
  *,
  checkpoint=None,
  decode_method=None,
  beam_size=None,
  n_best=None,
  attention_dir=None,
  batch_size=16,
):
  """Captions the image files that `patterns` name.

  Args:
    workdir: a training workdir.
    patterns: file paths or glob patterns.
    checkpoint: a checkpoint path; the latest if None.
    decode_method: a `decode_options.METHODS` entry instead of the workdir's `config.decode.method`.
    beam_size: instead of the workdir's `config.decode.beam_size`.
    n_best: this many captions per image (beam search) instead of `config.decode.n_best`.
    attention_dir: if set, write `<file name>.attention.png` for each image there.
    batch_size: images decoded together.

  Returns:
    A list of `Captioned`: patterns that match nothing, then every file in the order named
    (skipped ones included).

  Raises:
    FileNotFoundError: `workdir` holds no trained model.
  """
  config, tokenizer, model, _ = experiment.restore(workdir, checkpoint)
  decode = decoding.override(config.decode, decode_method, beam_size, n_best)
  search = decoding.build_search(decode, model, tokenizer)
  dataset = datasets.create(config.data, config.seed)  # reads nothing until a split is asked

  files, unmatched = expand(patterns)
  outcomes, readable = {}, []
  for path, reason in zip(files, images_lib.scan(files)):
    if reason:
      logging.warning("Skipping %s: %s", path, reason)
      outcomes[path] = Captioned(path, error=reason)
    else:
      readable.append(path)
  if attention_dir:
    os.makedirs(attention_dir, exist_ok=True)
  user_images = dataset.image_files(readable)  # resized as the workdir's dataset resizes
  for start in range(0, len(readable), batch_size):
    paths = readable[start : start + batch_size]
    pixels = user_images.numpy(range(start, start + len(paths)))
    out = search(pixels)
    tokens = out["tokens"].numpy()
    for k, (path, caption) in enumerate(zip(paths, tokenizer.decode_batch(tokens))):
      result = Captioned(
        path,
        caption=caption,
        log_prob=float(out["log_prob"][k]),
        finished=bool(out["finished"][k]),
      )
      if decode["n_best"] > 1:
        result.n_best = list(
          zip(
            tokenizer.decode_batch(out["n_best_tokens"][k].numpy()),
            out["n_best_log_prob"][k].numpy().tolist(),
            out["n_best_score"][k].numpy().tolist(),
            out["n_best_finished"][k].numpy().tolist(),
          )
        )
      if attention_dir:
        words = caption.split() + (["<end>"] if result.finished else [])
        name = os.path.basename(path)
        result.attention_png = os.path.join(attention_dir, f"{name}.attention.png")
        attention_grid(
          result.attention_png,
          pixels[k],
          words,
          out["attention"][k].numpy(),
          model.feature_map_shape,
        )
      outcomes[path] = result
  return unmatched + [outcomes[path] for path in files]
