"""A trained workdir as a SavedModel that captions encoded images with TensorFlow alone.

    python scripts/export.py --workdir=DIR --output=EXPORT

The SavedModel's "serving_default" signature (also the `serve` function of the loaded object)
takes `images`, a batch of encoded image files, tf.string [B] (JPEG, PNG, GIF's first frame,
BMP, WebP; any size and colour model), and returns

    "caption"   tf.string [B]     the words joined by single spaces, as Tokenizer.decode gives
    "log_prob"  float32 [B]       the caption's summed log-probability under the model
    "finished"  bool [B]          False where the caption was cut at max_length words
    "tokens"    int32 [B, T]      the word ids, then `<end>`, then `<pad>`
    "score"     float32 [B]       what the search ranks by: log_prob over the length penalty

Decoding and resizing (as the workdir's dataset resizes a user's files), the search of
`config.decode` (or another method or beam size) and the detokenisation all run in the graph,
so `tf.saved_model.load(EXPORT)` needs neither this package nor the workdir. An image the
decoder cannot read (empty, corrupt, unsupported) fails the whole call with TensorFlow's
InvalidArgumentError; check files first (`data/images.py:check_file`) or send them one by one.
EXPORT/export_info.json records what was exported: decode settings, image size, resize mode,
step, checkpoint and the training config.
"""

import json
import os
import shutil
import tempfile

from absl import logging
import keras
import tensorflow as tf

from captioning import decoding
from captioning import experiment
from captioning import files
from captioning import runtime
from captioning.data import datasets
from captioning.data import images as images_lib
from captioning.data import tokenizer as tokenizer_lib

ENDPOINT = "serve"  # also the "serving_default" signature
INFO_FILE = "export_info.json"
_SAVED_MODEL = "saved_model.pb"


def detokenize(tokens, vocabulary, *, start_id, end_id, pad_id):
  """Ids -> caption strings in the graph, exactly as `Tokenizer.decode_batch` does in Python.

  Each row stops at its first `<end>` or `<pad>`, skips `<start>`, maps ids outside the
  vocabulary to `<unk>` and joins the words with single spaces.

  Args:
    tokens: int [B, T].
    vocabulary: the tokenizer's words, in id order.
    start_id, end_id, pad_id: the special ids.

  Returns:
    tf.string [B].
  """
  tokens = tf.cast(tokens, tf.int32)
  words = tf.constant(vocabulary, tf.string)  # [V]
  size = len(vocabulary)
  stop = tf.logical_or(tf.equal(tokens, end_id), tf.equal(tokens, pad_id))
  before_stop = tf.equal(tf.cumsum(tf.cast(stop, tf.int32), axis=1), 0)  # [B, T]
  keep = tf.logical_and(before_stop, tf.not_equal(tokens, start_id))
  known = tf.logical_and(tokens >= 0, tokens < size)
  text = tf.where(
    known, tf.gather(words, tf.clip_by_value(tokens, 0, size - 1)), tokenizer_lib.UNK
  )  # [B, T]
  return tf.strings.reduce_join(tf.ragged.boolean_mask(text, keep), axis=1, separator=" ")


def serving_function(search, tokenizer, image_size, resize_mode):
  """The function a SavedModel serves: encoded images tf.string [B] -> a dict of [B] results.

  Args:
    search: a `decoding.Search`.
    tokenizer: the workdir's tokenizer.
    image_size: the side S the model reads.
    resize_mode: how an image is fitted to S (`images.RESIZE_MODES`).
  """
  vocabulary = tokenizer.vocabulary
  special = dict(start_id=tokenizer.start_id, end_id=tokenizer.end_id, pad_id=tokenizer.pad_id)

  def read(contents):
    return images_lib.resize(images_lib.decode(contents), image_size, resize_mode)

  def serve(images):
    pixels = tf.map_fn(
      read, images, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8)
    )  # [B, S, S, 3]
    out = search(pixels)
    tokens = tf.cast(out["tokens"], tf.int32)  # [B, T]
    result = {
      "caption": detokenize(tokens, vocabulary, **special),
      "log_prob": tf.cast(out["log_prob"], tf.float32),
      "finished": out["finished"],
      "tokens": tokens,
      "score": tf.cast(out["score"], tf.float32),
    }
    return result

  return serve


def _check_output(output_dir, overwrite):
  """Raises FileExistsError unless `output_dir` may be written (absent, empty, or a previous
  export that `overwrite` allows replacing)."""
  if not os.path.exists(output_dir):
    return
  if not os.path.isdir(output_dir):
    raise FileExistsError(f"--output {output_dir!r} is a file, not a folder.")
  if not os.listdir(output_dir):
    return
  if not overwrite:
    raise FileExistsError(
      f"--output {output_dir!r} is not empty; choose a new folder, or pass --overwrite "
      "(overwrite=True) to replace a previous export there."
    )
  if not os.path.exists(os.path.join(output_dir, _SAVED_MODEL)):
    raise FileExistsError(
      f"--output {output_dir!r} is not empty and holds no {_SAVED_MODEL}: refusing to replace "
      "a folder that is not a previous export, even with --overwrite."
    )


def _replace(source, target):
  """Moves the folder `source` to `target`, replacing a previous export there."""
  if os.path.isdir(target):
    if os.listdir(target):
      logging.warning("Replacing the previous export in %s.", target)
    shutil.rmtree(target)
  os.replace(source, target)


def export(
  workdir, output_dir, *, checkpoint=None, decode_method=None, beam_size=None, overwrite=False
):
  """Writes a workdir's model, with its decoding, as a SavedModel (see the module docstring).

  Args:
    workdir: a training workdir.
    output_dir: the SavedModel folder to write: absent or empty, or a previous export with
      `overwrite`.
    checkpoint: a checkpoint path; the latest if None.
    decode_method: a `decode_options.METHODS` entry instead of the workdir's `config.decode.method`.
    beam_size: instead of the workdir's `config.decode.beam_size`.
    overwrite: replace a previous export in `output_dir` (only once the new one is written).

  Returns:
    What export_info.json records, as a dict.

  Raises:
    FileNotFoundError: `workdir` holds no trained model.
    FileExistsError: `output_dir` is not empty and may not be replaced.
  """
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  _check_output(output_dir, overwrite)
  checkpoint = checkpoint or tf.train.latest_checkpoint(experiment.checkpoint_dir(workdir))
  config, tokenizer, model, step = experiment.restore(workdir, checkpoint)
  decode = decoding.override(config.decode, decode_method, beam_size)
  search = decoding.build_search(decode, model, tokenizer)
  dataset = datasets.create(config.data, config.seed)  # reads nothing until a split is asked
  image_size, resize_mode = dataset.image_size, dataset.resize_mode

  archive = keras.export.ExportArchive()
  # Not `archive.track(model)`: the archive saves the variables its endpoint uses by itself, and
  # tracking walks the model's trackables, tracing Keras's default serving function of a
  # subclassed model with float [None, None] tokens, which the decoder rejects.
  endpoint = archive.add_endpoint(
    ENDPOINT,
    serving_function(search, tokenizer, image_size, resize_mode),
    input_signature=[tf.TensorSpec([None], tf.string, name="images")],
  )
  info = {
    "workdir": os.path.abspath(workdir),
    "checkpoint": checkpoint,
    "step": step,
    "decode": decode,
    "image_size": image_size,
    "resize_mode": resize_mode,
    "vocab_size": tokenizer.vocab_size,
    "signature": {
      "name": "serving_default",
      "inputs": {"images": {"dtype": "string", "shape": [None]}},  # encoded image files
      "outputs": {
        key: {"dtype": value.dtype.name, "shape": value.shape.as_list()}  # None: any size
        for key, value in endpoint.get_concrete_function().structured_outputs.items()
      },
    },
    "config": json.loads(config.to_json()),
    "exported_with": runtime.provenance(),
  }
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  # Written beside the target first, so a failed export leaves a previous one untouched.
  staging = tempfile.mkdtemp(prefix=os.path.basename(output_dir) + ".", dir=parent)
  try:
    written = os.path.join(staging, "export")  # made with the usual permissions, unlike mkdtemp's
    archive.write_out(written, verbose=False)
    files.write_json(os.path.join(written, INFO_FILE), info)
    _replace(written, output_dir)
  finally:
    shutil.rmtree(staging)
  logging.info("Exported %s (step %d) to %s.", workdir, step, output_dir)
  return info
