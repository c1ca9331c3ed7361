"""Scores a results file against reference captions: no model, no workdir.

    python scripts/evaluate.py --results=captions.json --references=captions_val2014.json

Results are the COCO results format (`[{"image_id": int, "caption": str}, ...]`, what
`scripts/evaluate.py --workdir` writes as captions.json); references are a COCO caption
annotations file (`{"annotations": [{"image_id", "caption"}, ...], ...}`) or a Karpathy-split
file (`{"images": [{"cocoid" or "imgid", "sentences": [{"raw"}]}]}`). The numbers are those of
pycocoevalcap's `COCOEvalCap` on the same files: PTB tokenizer, corpus-level scorers, every
image of the results scored against all of its references.
"""

import collections
import json
import os

from captioning.evaluators import coco_metrics


class ResultsFileError(ValueError):
  """A results or references file that cannot be scored; the message names the file."""


def _read_json(path, what):
  if not os.path.exists(path):
    raise ResultsFileError(f"{what} file {path!r} does not exist.")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ResultsFileError(f"{what} file {path!r} is not valid JSON: {e}") from None


def load_results(path):
  """Reads a COCO results file; returns {image_id: caption}.

  Raises:
    ResultsFileError: not a list of {"image_id", "caption"}, or an image id given twice.
  """
  entries = _read_json(path, "Results")
  if not isinstance(entries, list) or not entries:
    raise ResultsFileError(
      f"Results file {path!r} must hold a non-empty list of "
      '{"image_id": ..., "caption": ...} (the COCO results format).'
    )
  results, seen = {}, collections.Counter()
  for k, entry in enumerate(entries):
    if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
      raise ResultsFileError(
        f"Results file {path!r}: entry {k} is {str(entry)[:80]!r}, not "
        '{"image_id": ..., "caption": ...}.'
      )
    if not isinstance(entry["caption"], str):
      raise ResultsFileError(
        f"Results file {path!r}: entry {k} has a caption of type "
        f"{type(entry['caption']).__name__}, not a string."
      )
    image_id = entry["image_id"]
    seen[image_id] += 1
    results[image_id] = entry["caption"]
  repeated = [i for i, n in seen.items() if n > 1]
  if repeated:
    raise ResultsFileError(
      f"Results file {path!r} gives {len(repeated)} image id(s) more than one caption, e.g. "
      f"{repeated[:5]}; COCO results have one caption per image."
    )
  return results


def load_references(path):
  """Reads COCO caption annotations or a Karpathy-split file; returns {image_id: [captions]}.

  Raises:
    ResultsFileError: neither format, or no captions.
  """
  data = _read_json(path, "References")
  references = collections.defaultdict(list)
  if isinstance(data, dict) and isinstance(data.get("annotations"), list):
    for k, annotation in enumerate(data["annotations"]):
      if not isinstance(annotation, dict) or not {"image_id", "caption"} <= set(annotation):
        raise ResultsFileError(
          f"References file {path!r}: annotations[{k}] lacks image_id or caption."
        )
      references[annotation["image_id"]].append(str(annotation["caption"]))
  elif isinstance(data, dict) and isinstance(data.get("images"), list):
    for k, image in enumerate(data["images"]):
      key = "cocoid" if "cocoid" in image else "imgid"
      if key not in image or not isinstance(image.get("sentences"), list):
        raise ResultsFileError(
          f"References file {path!r}: images[{k}] lacks an id (cocoid or imgid) or sentences."
        )
      references[image[key]].extend(str(s["raw"]) for s in image["sentences"])
  else:
    raise ResultsFileError(
      f"References file {path!r} is neither COCO caption annotations "
      '({"annotations": [{"image_id", "caption"}]}) nor a Karpathy-split file '
      '({"images": [{"cocoid" or "imgid", "sentences"}]}).'
    )
  if not references:
    raise ResultsFileError(f"References file {path!r} holds no captions.")
  return dict(references)


def score_results_file(
  results_path,
  references_path,
  *,
  metrics=coco_metrics.SUPPORTED_METRICS,
  spice=False,
  output=None,
):
  """Scores a results file; writes the metrics as JSON and returns them.

  Args:
    results_path: a COCO results file.
    references_path: COCO caption annotations or a Karpathy-split file.
    metrics: which of `coco_metrics.SUPPORTED_METRICS` to compute (all by default).
    spice: also compute SPICE, where its models are installed (never downloaded).
    output: where to write the metrics JSON; next to the results (`*_metrics.json`) if None.

  Returns:
    {metric: score, "num_images", "tokenizer", "skipped_metrics", "warnings", "results",
    "references"}.

  Raises:
    ResultsFileError: a file cannot be read, or the results name images the references lack.
  """
  results = load_results(results_path)
  references = load_references(references_path)
  unknown = [i for i in results if i not in references]
  if unknown:
    raise ResultsFileError(
      f"{len(unknown)} image id(s) of {results_path!r} are not in {references_path!r}, e.g. "
      f"{unknown[:5]}: were the results made on another split?"
    )
  metrics = tuple(metrics) + (("SPICE",) if spice else ())
  scored = coco_metrics.compute_caption_metrics(
    results, {i: references[i] for i in results}, metrics=metrics
  )
  report = {
    **scored.scores,
    "num_images": len(results),
    "tokenizer": scored.tokenizer,
    "skipped_metrics": dict(scored.skipped),
    "warnings": list(scored.warnings),
    "results": os.path.abspath(results_path),
    "references": os.path.abspath(references_path),
  }
  if output is None:
    output = os.path.splitext(results_path)[0] + "_metrics.json"
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
