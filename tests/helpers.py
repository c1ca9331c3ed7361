"""Test helpers: loading configs by path and reading TensorBoard scalars back."""

import glob
import json
import os
import subprocess
import sys

import tensorflow as tf

from captioning import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json_script(source, *args, timeout=600):
  """Runs Python `source` in a fresh process (`sys.argv[1:]` = args) from the repository root
  and returns the JSON its last line of output prints; a failure shows the end of its stderr.

  For what one process cannot do twice, such as splitting the CPU into logical devices before
  TensorFlow starts (the rest of the suite has started it in this process)."""
  result = subprocess.run(
    [sys.executable, "-c", source, *map(str, args)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def load_config(name="smoke", config_arg=None, **overrides):
  """Loads configs/NAME.py (with `get_config(config_arg)`) and applies dotted overrides, e.g.
  {"model.decoder.hidden_dim": 32}."""
  return config_files.override(config_files.load(name, config_arg), overrides)


def _summary_values(logdir):
  """Yields (step, value proto) for everything written to the event files in `logdir`."""
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        yield event.step, value


def read_scalars(logdir):
  """{tag: {step: value}} of the scalar summaries in `logdir`."""
  out = {}
  for step, value in _summary_values(logdir):
    if value.metadata.plugin_data.plugin_name == "scalars":
      out.setdefault(value.tag, {})[step] = float(tf.make_ndarray(value.tensor))
  return out


def read_tags(logdir):
  """{tag: plugin name} of everything written to `logdir`."""
  return {value.tag: value.metadata.plugin_data.plugin_name for _, value in _summary_values(logdir)}


def model_sections(encoder=None, neck=None, decoder=None):
  """A tiny `config.model`: a 2-stage small CNN (32 px -> 8x8) and a small SAT decoder.

  Each argument updates that section, e.g. decoder={"attention_coverage": True}.
  """
  encoder, decoder = dict(encoder or {}), dict(decoder or {})
  cnn = {"name": "small_cnn", "widths": (8, 16), "strides": (2, 2)}
  sat = {"name": "sat_lstm", "embed_dim": 16, "hidden_dim": 24, "attention_dim": 12}
  return {
    # Another encoder's or decoder's section replaces the default one whole.
    "encoder": {**cnn, **encoder} if encoder.get("name", "small_cnn") == "small_cnn" else encoder,
    "neck": dict(neck or {}),
    "decoder": {**sat, **decoder} if decoder.get("name", "sat_lstm") == "sat_lstm" else decoder,
  }


def tiny_captioner(vocab_size=20, image_size=32, output_bias=None, dtype=None, **sections):
  """A built Captioner of `model_sections(**sections)`."""
  from captioning.models import captioner  # pylint: disable=import-outside-toplevel

  model = captioner.build_captioner(
    model_sections(**sections), vocab_size, output_bias=output_bias, dtype=dtype
  )
  model.build({"image": (None, image_size, image_size, 3), "tokens": (None, None)})
  return model


# Image files as they come in the wild, for the real-photo datasets' tests. Every good kind
# decodes to RGB; every bad kind is left out of an index with the reason named here.
GOOD_KINDS = ("jpeg", "gray_jpeg", "cmyk_jpeg", "rgba_png", "palette_png", "gif", "bmp", "wide")
BAD_KINDS = {
  "corrupt": "undecodable",
  "truncated": "truncated_file",
  "empty": "empty_file",
  "missing": "missing_file",
  "bmp8": "unsupported_format",
  "no_caption": "no_usable_caption",
}


def write_image(path, kind, seed=0):
  """Writes an image file of `kind` (GOOD_KINDS or BAD_KINDS) at `path`; returns its RGB pixels
  (None for bad kinds)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel

  rng = np.random.RandomState(seed)
  pixels = rng.randint(0, 256, (36, 80 if kind == "wide" else 48, 3)).astype(np.uint8)
  image = Image.fromarray(pixels)
  if kind in ("jpeg", "wide", "no_caption"):
    image.save(path, "JPEG")
  elif kind == "gray_jpeg":
    image.convert("L").save(path, "JPEG")
  elif kind == "cmyk_jpeg":
    image.convert("CMYK").save(path, "JPEG")
  elif kind == "rgba_png":
    image.convert("RGBA").save(path, "PNG")
  elif kind == "palette_png":
    image.convert("P").save(path, "PNG")
  elif kind == "gif":
    frames = [image.convert("P"), Image.fromarray(255 - pixels).convert("P")]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:])
  elif kind == "bmp":
    image.save(path, "BMP")
  elif kind == "bmp8":
    image.convert("P").save(path, "BMP")
  elif kind == "corrupt":
    with open(path, "wb") as f:
      f.write(b"\xff\xd8 this is not really a jpeg \xff\xd9")
  elif kind == "truncated":
    image.save(path, "JPEG")
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[: len(data) // 2])
  elif kind == "empty":
    open(path, "wb").close()
  elif kind != "missing":
    raise ValueError(kind)
  return pixels if kind in GOOD_KINDS else None


def photo_records(root, sizes=(("train", 12), ("val", 4), ("test", 4)), bad=True):
  """Writes a folder of photos under `root`/images and returns their records.

  Each split gets its number of good images (cycling through GOOD_KINDS, 5 captions each, with
  mixed case, punctuation and unicode); with `bad`, the train split also gets one image of each
  BAD_KINDS. Returns a list of dicts: id, file (relative to root/images), split, captions, kind.
  """
  import os  # pylint: disable=import-outside-toplevel,redefined-outer-name

  folder = os.path.join(root, "images")
  os.makedirs(folder, exist_ok=True)
  records, next_id = [], 1001
  colours = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
  for split, count in sizes:
    kinds = [GOOD_KINDS[i % len(GOOD_KINDS)] for i in range(count)]
    if bad and split == "train":
      kinds += list(BAD_KINDS)
    for kind in kinds:
      ext = {"rgba_png": "png", "palette_png": "png", "gif": "gif", "bmp": "bmp", "bmp8": "bmp"}
      file = f"{split}_{next_id}.{ext.get(kind, 'jpg')}"
      write_image(os.path.join(folder, file), kind, seed=next_id)
      colour = colours[next_id % len(colours)]
      captions = [
        f"A {colour.upper()} thing, number {next_id}!",
        f"a  {colour} photo\tof item {next_id}.",
        f"Café scene with a {colour} object",
        f"the {colour} one “quoted” {next_id}",
        f"{colour} {colour} {colour}",
      ]
      if kind == "no_caption":
        captions = ["", "   ", "...!!!"]
      records.append(
        {"id": next_id, "file": file, "split": split, "captions": captions, "kind": kind}
      )
      next_id += 1
  return records


def write_karpathy_json(path, records, coco_style=False):
  """The Karpathy-split file of `records` (COCO style: filepath and cocoid, like
  dataset_coco.json)."""
  import json  # pylint: disable=import-outside-toplevel

  images = []
  for n, r in enumerate(records):
    entry = {"filename": r["file"], "split": r["split"], "imgid": n,
             "sentences": [{"raw": c} for c in r["captions"]]}  # fmt: skip
    if coco_style:
      entry.update(filepath="", cocoid=r["id"])
    images.append(entry)
  with open(path, "w") as f:
    json.dump({"images": images, "dataset": "test"}, f)


def write_coco_json(path, records):
  """COCO caption annotations of `records`."""
  import json  # pylint: disable=import-outside-toplevel

  data = {
    "images": [{"id": r["id"], "file_name": r["file"]} for r in records],
    "annotations": [
      {"image_id": r["id"], "id": 10 * r["id"] + k, "caption": c}
      for r in records
      for k, c in enumerate(r["captions"])
    ],
  }
  with open(path, "w") as f:
    json.dump(data, f)


# Examples of a mocked TFDS coco_captions, distinct per split (the default mock repeats ids and
# gives every split the same images); captions include unusable ones ("", "...").
TFDS_SPLIT_IDS = {"train": range(100, 112), "val": range(200, 204), "test": range(300, 304)}


def tfds_as_dataset(calls=None):
  """An `as_dataset_fn` for `tfds.testing.mock_data`: encoded JPEGs, as SkipDecoding gives
  them. Appends each split asked for to `calls`."""
  import io  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel

  def jpeg(seed):
    pixels = np.random.RandomState(seed).randint(0, 256, (30, 40, 3)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()

  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, decoders, read_config, kwargs
    if calls is not None:
      calls.append(str(split))
    ids = list(TFDS_SPLIT_IDS[str(split)])
    examples = {
      "image": [jpeg(i) for i in ids],
      "image/id": np.array(ids, np.int64),
      "captions": {
        "text": [[f"A Photo of item {i}.", f"item {i} again", "", "...", f"{i}"] for i in ids],
        "id": [[5 * i + k for k in range(5)] for i in ids],
      },
    }
    return tf.data.Dataset.from_tensor_slices(examples)

  return as_dataset


class MarkovDecoder:
  """A stand-in decoder whose next word depends only on the previous one (no image), written to
  the decoder contract: batch-first memory and state, step -> (logits, state, outputs)."""

  max_steps = None

  def __init__(self, log_transitions):
    self.log_transitions = tf.constant(log_transitions, tf.float32)  # [V, V]
    self.vocab_size = log_transitions.shape[0]

  def prepare(self, features):
    return {"features": features}

  def initial_state(self, memory):
    return {"steps": tf.zeros([tf.shape(memory["features"])[0]], tf.int32)}

  def step(self, tokens, state, memory):
    alpha = tf.fill([tf.shape(tokens)[0], 4], 0.25)
    state = {"steps": state["steps"] + 1}
    return tf.gather(self.log_transitions, tokens), state, {"attention": alpha}


class MarkovCaptioner:
  """A stand-in captioner over `MarkovDecoder`: p(next word | previous word) is a known table,
  whatever the image."""

  def __init__(self, log_transitions):
    self.decoder = MarkovDecoder(log_transitions)

  def encode(self, images, training=False):
    return tf.zeros([tf.shape(images)[0], 4, 2])
