"""Scoring a results file with no model: the numbers are COCOEvalCap's on the same files, bad
files are clear errors, and SPICE never downloads."""

import json
import os
import subprocess
import sys

import pytest

from captioning.evaluators import coco_metrics
from captioning.evaluators import results_file
import helpers

FAST = ("Bleu", "ROUGE_L", "CIDEr")  # METEOR starts a JVM (seconds): only where it is compared

REFERENCES = {
  11: ["a dog runs on the grass .", "A brown dog running across a lawn", "dog on grass"],
  12: ["two people ride bikes down a street", "Cyclists on a city road.", "people biking"],
  13: ["a plate of food with broccoli", "A meal: rice, broccoli and chicken.", "dinner plate"],
  14: ["a cat sleeps on a red couch", "The cat is asleep on the sofa.", "sleeping cat"],
  15: ["a man surfing a large wave", "Surfer riding a wave in the ocean", "man on surfboard"],
  16: ["an empty street at night", "A city street with lights at night.", "night road"],
}
RESULTS = {
  11: "a dog running on the grass",
  12: "a group of people riding bikes on a street",
  13: "a plate of food with rice and broccoli",
  14: "a cat laying on a couch",
  15: "a man riding a wave on a surfboard",
}


def write_files(folder, results=None, references=None):
  references = REFERENCES if references is None else references
  results = RESULTS if results is None else results
  annotations = {
    "images": [{"id": i, "file_name": f"{i}.jpg"} for i in references],
    "annotations": [
      {"id": 100 * i + k, "image_id": i, "caption": c}
      for i, caps in references.items()
      for k, c in enumerate(caps)
    ],
  }
  refs_path, res_path = os.path.join(folder, "refs.json"), os.path.join(folder, "results.json")
  with open(refs_path, "w") as f:
    json.dump(annotations, f)
  with open(res_path, "w") as f:
    json.dump([{"image_id": i, "caption": c} for i, c in results.items()], f)
  return res_path, refs_path


class _Coco:
  """The part of pycocotools' COCO object that COCOEvalCap reads."""

  def __init__(self, anns):
    self.imgToAnns = {}
    for ann in anns:
      self.imgToAnns.setdefault(ann["image_id"], []).append(ann)

  def getImgIds(self):  # noqa: N802  (the COCO API's name)
    return list(self.imgToAnns)


class _NoSpice:
  """COCOEvalCap always runs SPICE, which downloads its models: the tests leave it out."""

  def method(self):
    return "SPICE"

  def compute_score(self, gts, res):
    del res
    return 0.0, [0.0] * len(gts)


@pytest.mark.skipif(not coco_metrics.java_available(), reason="COCOEvalCap needs Java")
def test_scores_equal_coco_eval_cap_on_the_same_files(tmp_path, monkeypatch):
  from pycocoevalcap import eval as coco_eval  # pylint: disable=import-outside-toplevel

  res_path, refs_path = write_files(str(tmp_path))
  report = results_file.score_results_file(res_path, refs_path)

  monkeypatch.setattr(coco_eval, "Spice", _NoSpice)
  with open(refs_path) as f:
    coco = _Coco(json.load(f)["annotations"])
  with open(res_path) as f:
    coco_res = _Coco([dict(a, id=k) for k, a in enumerate(json.load(f))])
  evaluator = coco_eval.COCOEvalCap(coco, coco_res)
  evaluator.params["image_id"] = coco_res.getImgIds()  # what COCO's own example does
  evaluator.evaluate()
  for metric in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
    assert report[metric] == pytest.approx(evaluator.eval[metric], abs=1e-12), metric
  assert report["num_images"] == 5 and report["tokenizer"] == "ptb"
  with open(str(tmp_path / "results_metrics.json")) as f:
    assert json.load(f)["CIDEr"] == report["CIDEr"]


def test_karpathy_references_score_like_coco_annotations(tmp_path):
  res_path, refs_path = write_files(str(tmp_path))
  karpathy = {
    "images": [
      {
        "cocoid": i,
        "filename": f"{i}.jpg",
        "split": "test",
        "sentences": [{"raw": c} for c in caps],
      }
      for i, caps in REFERENCES.items()
    ]
  }
  karpathy_path = str(tmp_path / "dataset_coco.json")
  with open(karpathy_path, "w") as f:
    json.dump(karpathy, f)
  a = results_file.score_results_file(res_path, refs_path, metrics=FAST, output=str(tmp_path / "a"))
  b = results_file.score_results_file(
    res_path, karpathy_path, metrics=FAST, output=str(tmp_path / "b")
  )
  for metric in ("Bleu_4", "ROUGE_L", "CIDEr"):
    assert a[metric] == b[metric]


@pytest.mark.parametrize(
  "results,references,match",
  [
    ([{"image_id": 11, "caption": "a"}, {"image_id": 11, "caption": "b"}], None, "more than one"),
    ([{"image_id": 99, "caption": "a dog"}], None, r"not in .*another split"),
    ({"image_id": 11}, None, "non-empty list"),
    ([{"image_id": 11, "text": "a dog"}], None, "entry 0"),
    ([{"image_id": 11, "caption": 3}], None, "not a string"),
    ([{"image_id": 11, "caption": "a"}], {"images": [{"file_name": "x"}]}, "lacks an id"),
    ([{"image_id": 11, "caption": "a"}], {"info": {}}, "neither COCO"),
  ],
)
def test_bad_files_are_clear_errors(tmp_path, results, references, match):
  res_path, refs_path = str(tmp_path / "res.json"), str(tmp_path / "refs.json")
  with open(res_path, "w") as f:
    json.dump(results, f)
  if references is None:
    write_files(str(tmp_path))
  else:
    with open(refs_path, "w") as f:
      json.dump(references, f)
  with pytest.raises(results_file.ResultsFileError, match=match):
    results_file.score_results_file(res_path, refs_path, metrics=FAST)


def test_missing_and_broken_files_are_named(tmp_path):
  _, refs_path = write_files(str(tmp_path))
  with pytest.raises(results_file.ResultsFileError, match="does not exist"):
    results_file.score_results_file(str(tmp_path / "nope.json"), refs_path)
  broken = tmp_path / "broken.json"
  broken.write_text('[{"image_id": 1,')
  with pytest.raises(results_file.ResultsFileError, match=r"broken\.json.*not valid JSON"):
    results_file.score_results_file(str(broken), refs_path)


def test_spice_is_skipped_with_a_reason_and_never_downloaded(tmp_path, monkeypatch):
  from pycocoevalcap.spice import get_stanford_models  # pylint: disable=import-outside-toplevel

  def no_download(*args, **kwargs):
    raise AssertionError("SPICE tried to download its models")

  monkeypatch.setattr(get_stanford_models, "urlretrieve", no_download)
  monkeypatch.setattr(coco_metrics, "spice_directory", lambda: str(tmp_path / "no_spice"))
  res_path, refs_path = write_files(str(tmp_path))
  report = results_file.score_results_file(res_path, refs_path, metrics=FAST, spice=True)
  assert "SPICE" not in report and "never downloads" in report["skipped_metrics"]["SPICE"]
  assert report["CIDEr"] > 0


def test_per_image_scores_average_to_the_corpus_score_where_the_metric_is_a_mean():
  scored = coco_metrics.compute_caption_metrics(
    RESULTS, {i: REFERENCES[i] for i in RESULTS}, metrics=("Bleu", "ROUGE_L", "CIDEr")
  )
  assert scored.image_ids == list(RESULTS)
  for metric in ("ROUGE_L", "CIDEr"):  # corpus score = mean of the images' scores
    values = scored.per_image[metric]
    assert len(values) == 5
    assert sum(values) / 5 == pytest.approx(scored.scores[metric], abs=1e-9)
  assert len(scored.per_image["Bleu_4"]) == 5  # BLEU's corpus score is not a mean


def test_evaluate_script_scores_a_results_file_without_a_workdir_or_tensorflow(tmp_path):
  res_path, refs_path = write_files(str(tmp_path))
  out = str(tmp_path / "scores" / "m.json")
  # A `tensorflow` that cannot be imported, first on the path: scoring never needs it.
  (tmp_path / "no_tf" / "tensorflow").mkdir(parents=True)
  (tmp_path / "no_tf" / "tensorflow" / "__init__.py").write_text(
    "raise ImportError('scoring a results file imported TensorFlow')\n"
  )
  path = os.pathsep.join([str(tmp_path / "no_tf"), helpers.ROOT])

  def run(*args):
    return subprocess.run(
      [sys.executable, os.path.join(helpers.ROOT, "scripts", "evaluate.py"), *args],
      cwd=str(tmp_path),
      env=dict(os.environ, PYTHONPATH=path),
      capture_output=True,
      text=True,
      timeout=300,
    )

  result = run(f"--results={res_path}", f"--references={refs_path}", f"--output={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out) as f:
    assert json.load(f)["num_images"] == 5
  with open(res_path, "w") as f:
    json.dump([{"image_id": 404, "caption": "a dog"}], f)
  result = run(f"--results={res_path}", f"--references={refs_path}")
  assert result.returncode != 0 and "not in" in result.stderr and "Traceback" not in result.stderr
  result = run(f"--results={res_path}")
  assert result.returncode != 0 and "--references" in result.stderr
