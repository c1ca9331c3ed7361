"""Scores a results file against reference captions: no model, no workdir.

    python scripts/evaluate.py --results=captions.json --references=captions_val2014.json

Results are the COCO results format (`[{"image_id": int, "caption": str}, ...]`, what
`scripts/evaluate.py --workdir` writes as captions.json); references are a COCO caption
annotations file (`{"annotations": [{"image_id", "caption"}, ...], ...}`) or a Karpathy-split
file (`{"images": [{"cocoid" or "imgid", "sentences": [{"raw"}]}]}`). The numbers are those of
pycocoevalcap's `COCOEvalCap` on the same files: PTB tokenizer, corpus-level scorers, every
image of the results scored against all of its references.
"""

import os

from captioning import files
from captioning.data import annotations
from captioning.evaluators import coco_metrics

# A results or references file that cannot be scored; the message names the file.
ResultsFileError = annotations.AnnotationsError


def load_results(path):
  """Reads a COCO results file; returns {image_id: caption}.

  Raises:
    ResultsFileError: not a list of {"image_id", "caption"}, or an image id given twice.
  """
  entries = annotations.read_json(path, "results")
  annotations.require(
    isinstance(entries, list) and entries,
    path,
    'must hold a non-empty list of {"image_id": ..., "caption": ...} (the COCO results format)',
  )
  results, repeated = {}, []
  for k, entry in enumerate(entries):
    annotations.require(
      isinstance(entry, dict) and "image_id" in entry and "caption" in entry,
      path,
      f'entry {k} is {str(entry)[:80]!r}, not {{"image_id": ..., "caption": ...}}',
    )
    annotations.require(
      isinstance(entry["caption"], str),
      path,
      f"entry {k} has a caption of type {type(entry['caption']).__name__}, not a string",
    )
    if entry["image_id"] in results:
      repeated.append(entry["image_id"])
    results[entry["image_id"]] = entry["caption"]
  annotations.require(
    not repeated,
    path,
    f"gives {len(set(repeated))} image id(s) more than one caption, e.g. {repeated[:5]}; "
    "COCO results have one caption per image",
  )
  return results


def load_references(path):
  """Reads COCO caption annotations or a Karpathy-split file; returns {image_id: [captions]}.

  Raises:
    ResultsFileError: neither format, or no captions.
  """
  data = annotations.read_json(path, "references")
  if isinstance(data, dict) and isinstance(data.get("annotations"), list):
    references = annotations.coco_captions(data, path)
  elif isinstance(data, dict) and isinstance(data.get("images"), list):
    references = {}
    for image_id, _, _, raw in annotations.karpathy_images(data, path):
      references.setdefault(image_id, []).extend(raw)
  else:
    raise ResultsFileError(
      f"References file {path!r} is neither COCO caption annotations "
      '({"annotations": [{"image_id", "caption"}]}) nor a Karpathy-split file '
      '({"images": [{"cocoid" or "imgid", "sentences"}]}).'
    )
  annotations.require(references, path, "holds no captions")
  return references


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
  files.write_json(output, report)
  return report
