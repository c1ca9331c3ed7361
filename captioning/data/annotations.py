"""Caption annotation files, read with errors that name the file and what is wrong.

The two published formats, parsed once for everything that reads them: the photo datasets
(`coco.py`, `karpathy.py`) and results-file scoring (`evaluators/results_file.py`). Pure
Python: no TensorFlow.

    COCO caption annotations:
      {"images": [{"id", "file_name"}, ...], "annotations": [{"image_id", "caption"}, ...]}
    Karpathy splits (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json):
      {"images": [{"filename", "filepath"?, "split", "cocoid" or "imgid",
                   "sentences": [{"raw"}, ...]}, ...]}
"""

import collections
import json
import os


class AnnotationsError(ValueError):
  """An annotations (or results) file that cannot be used; the message names it."""


def read_json(path, what):
  """Reads a JSON file, with errors that name it.

  Args:
    path: the file.
    what: where the path came from, for messages (e.g. "config.data.annotations").
  """
  if not path:
    raise AnnotationsError(f"{what} is empty: pass --{what}=PATH.")
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise AnnotationsError(f"{what}: no file at {path} (the path does not exist).")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise AnnotationsError(f"{what}: {path} is not valid JSON ({error}).") from error


def require(condition, path, message):
  """Raises AnnotationsError about `path` unless `condition`."""
  if not condition:
    raise AnnotationsError(f"{path}: {message}")


def coco_captions(data, path):
  """The captions of COCO caption annotations `data` (read from `path`): {image_id: [str]}."""
  require(
    isinstance(data, dict) and isinstance(data.get("annotations"), list),
    path,
    'expected {"annotations": [...]} (COCO caption annotations)',
  )
  captions = collections.defaultdict(list)
  for n, annotation in enumerate(data["annotations"]):
    require(
      isinstance(annotation, dict)
      and "image_id" in annotation
      and isinstance(annotation.get("caption"), str),
      path,
      f"annotations[{n}] needs 'image_id' and a 'caption' string",
    )
    captions[int(annotation["image_id"])].append(annotation["caption"])
  return dict(captions)


def karpathy_images(data, path):
  """The images of a Karpathy-split file `data` (read from `path`).

  Returns:
    [(image_id, split, file relative to the image root, raw captions)]; the id is COCO's where
    the file has one (so results match COCO's annotations), else `imgid`.
  """
  require(
    isinstance(data, dict) and isinstance(data.get("images"), list),
    path,
    'expected {"images": [...]} (a Karpathy-split file such as dataset_flickr8k.json)',
  )
  out = []
  for n, image in enumerate(data["images"]):
    where = f"images[{n}]"
    require(isinstance(image, dict), path, f"{where} is not an object")
    require(
      "cocoid" in image or "imgid" in image,
      path,
      f"{where} lacks an id: it has neither 'cocoid' nor 'imgid'",
    )
    for key in ("filename", "split", "sentences"):
      require(key in image, path, f"{where} has no {key!r}")
    sentences = image["sentences"]
    require(isinstance(sentences, list), path, f"{where}.sentences is not a list")
    raw = []
    for m, sentence in enumerate(sentences):
      require(
        isinstance(sentence, dict) and isinstance(sentence.get("raw"), str),
        path,
        f"{where}.sentences[{m}] has no 'raw' text",
      )
      raw.append(sentence["raw"])
    image_id = int(image["cocoid"] if "cocoid" in image else image["imgid"])
    file = os.path.join(image.get("filepath", ""), image["filename"])
    out.append((image_id, image["split"], file, raw))
  return out
