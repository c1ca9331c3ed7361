"""Tests for the COCO caption metrics wrapper around pycocoevalcap."""

import concurrent.futures
import os
import subprocess
import sys
import threading
import typing

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
import pytest

from captioning.evaluators import coco_metrics
from captioning.evaluators import meteor as meteor_process

JAVA = coco_metrics.java_available()
requires_java = pytest.mark.skipif(not JAVA, reason="needs Java for PTBTokenizer / METEOR")
NO_METEOR = ("Bleu", "ROUGE_L", "CIDEr")
ALL_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
LONG_CAPTION = " ".join(f"a cat sits on mat{i}." for i in range(100))  # 500 words

REFERENCES = {
  11: [
    "A man riding a wave on top of a surfboard.",
    "A surfer rides a large wave.",
    "A person surfing on a big ocean wave.",
  ],
  12: ["A dog sitting on a couch in a living room.", "A brown dog rests on the sofa."],
  13: [
    "Two giraffes standing next to each other in a field.",
    "A pair of giraffes in the grass near trees.",
  ],
  14: ["A plate of food with broccoli, carrots, and rice.", "A meal of rice and vegetables."],
  15: ["A red double-decker bus driving down a street.", "A bus on a city street."],
}
# Ordinary predictions and an empty one.
PREDICTIONS = {
  11: "A man riding a wave on a surfboard.",
  12: "a dog laying on a couch",
  13: "Two giraffes standing in a grassy field.",
  14: "A plate of rice and broccoli!",
  15: "",
}
# Stop-words are kept rare so that CIDEr's IDF is informative on a small corpus.
RIGHT = {
  1: ["a red circle on a white table", "a small red circle lies on a table"],
  2: ["two dogs run across green grass", "a pair of dogs running on grass"],
  3: ["a yellow bus parked near buildings", "a bus stopped beside tall buildings"],
  4: ["an old man reading a newspaper", "elderly man holding his newspaper"],
}


def _direct_coco_scores(predictions, references):
  """Scores the way pycocoevalcap's COCOEvalCap.evaluate does, without the wrapper."""
  gts = {i: [{"caption": c} for c in references[i]] for i in predictions}
  res = {i: [{"caption": predictions[i]}] for i in predictions}
  tokenizer = PTBTokenizer()
  gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
  meteor = Meteor()
  scores = {}
  try:
    for scorer, method in [
      (Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
      (meteor, "METEOR"),
      (Rouge(), "ROUGE_L"),
      (Cider(), "CIDEr"),
    ]:
      score, _ = scorer.compute_score(gts, res)
      scores.update(zip(method, score) if isinstance(method, list) else [(method, score)])
  finally:
    meteor.__del__()  # Stops the JVM now; compute_score released the lock.
  return scores


@pytest.fixture(scope="module")
def java_runs():
  """Runs every METEOR computation once; each METEOR JVM needs seconds to load its tables.

  Two computations at a time (each METEOR's JVM beside its PTB tokenizer's) overlap well even
  on two cores; more slow each other down severely.
  """
  if not JAVA:
    pytest.skip("needs Java for PTBTokenizer / METEOR")
  meteors = []

  class RecordingMeteor(meteor_process.FastStartMeteor):
    def __init__(self):
      super().__init__()
      meteors.append(self)

  # A 500-word caption costs METEOR seconds, so only this corpus has one.
  references = {**RIGHT, 5: [LONG_CAPTION]}
  identical = {i: refs[0] for i, refs in references.items()}
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(meteor_process, "FastStartMeteor", RecordingMeteor)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
      same = pool.submit(coco_metrics.compute_caption_metrics, identical, references)
      wrapped = pool.submit(coco_metrics.compute_caption_metrics, PREDICTIONS, REFERENCES)
      direct = pool.submit(_direct_coco_scores, PREDICTIONS, REFERENCES)
      runs = {"wrapped": wrapped.result(), "direct": direct.result(), "identical": same.result()}
  runs["meteors"] = meteors
  return runs


@requires_java
def test_matches_direct_pycocoevalcap_calls(java_runs):
  result, direct = java_runs["wrapped"], java_runs["direct"]
  assert result.tokenizer == "ptb"
  assert result.skipped == {}
  assert tuple(result.scores) == ALL_KEYS
  assert result.scores == {k: float(v) for k, v in direct.items()}  # Exactly, not approximately.
  assert 0.0 < result.scores["METEOR"] < 1.0
  assert any("empty" in w for w in result.warnings)


@requires_java
def test_identical_captions_score_perfectly_even_when_500_words_long(java_runs):
  scores = java_runs["identical"].scores
  assert scores["Bleu_1"] == pytest.approx(1.0, abs=1e-6)
  assert scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
  assert scores["METEOR"] == pytest.approx(1.0, abs=1e-3)
  assert scores["ROUGE_L"] == pytest.approx(1.0)
  assert scores["CIDEr"] > 1.0


@requires_java
def test_meteor_jvms_are_stopped(java_runs):
  assert len(java_runs["meteors"]) == 2
  for meteor in java_runs["meteors"]:
    assert meteor.meteor_p.poll() is not None
    assert not meteor.lock.locked()


def test_wrong_captions_score_lower_than_right_ones():
  right = {i: refs[1] for i, refs in RIGHT.items()}
  wrong = {i: RIGHT[i % 4 + 1][1] for i in RIGHT}  # Each image gets its neighbour's caption.
  good = coco_metrics.compute_caption_metrics(right, RIGHT, metrics=NO_METEOR).scores
  bad = coco_metrics.compute_caption_metrics(wrong, RIGHT, metrics=NO_METEOR).scores
  for key in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
    assert bad[key] < good[key], key
  assert good["CIDEr"] > 1.0 > bad["CIDEr"]


def test_punctuation_and_case_do_not_change_scores():
  references = {
    1: ["a red circle on paper", "a circle"],
    2: ["a blue square on paper"],
    3: ["a green triangle on paper", "a triangle"],
  }
  plain = {1: "a red circle on paper", 2: "a blue square on paper", 3: "a green triangle on paper"}
  noisy = {
    1: "A red circle on paper.",
    2: "A BLUE square on PAPER!",
    3: "a green, triangle on paper;",
  }
  a = coco_metrics.compute_caption_metrics(plain, references, metrics=NO_METEOR)
  b = coco_metrics.compute_caption_metrics(noisy, references, metrics=NO_METEOR)
  assert a.scores == b.scores
  assert a.scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_line_breaks_inside_captions_do_not_shift_captions_between_images():
  # The Java tokenizer would read "\r" and "\u2028" as extra lines.
  references = {
    1: ["a red\rcircle on paper", "a circle"],
    2: ["a blue square on paper"],
    3: ["a green\u2028tree on a hill"],
  }
  predictions = {
    1: "a red\ncircle on paper",
    2: "a blue square on paper",
    3: "a green tree on a hill",
  }
  result = coco_metrics.compute_caption_metrics(predictions, references, metrics=NO_METEOR)
  assert result.scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
  assert result.scores["ROUGE_L"] == pytest.approx(1.0)


def test_empty_hypotheses_score_zero_without_crashing():
  predictions = dict.fromkeys(RIGHT, "")
  predictions[1] = "..."  # Empty once punctuation is removed.
  result = coco_metrics.compute_caption_metrics(predictions, RIGHT, metrics=NO_METEOR)
  assert result.scores == {k: 0.0 for k in ALL_KEYS if k != "METEOR"}
  assert any("4 prediction(s) are empty" in w for w in result.warnings)


def test_without_java_uses_python_fallback_and_skips_meteor():
  predictions = {i: refs[1] for i, refs in RIGHT.items()}
  predictions[2] = LONG_CAPTION
  result = coco_metrics.compute_caption_metrics(predictions, RIGHT, use_java=False)
  assert result.tokenizer == "python_fallback"
  assert result.skipped == {"METEOR": coco_metrics.METEOR_NEEDS_JAVA}
  assert tuple(result.scores) == ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")
  assert all(0.0 < s < 10.0 for s in result.scores.values())
  assert any("NOT comparable with published" in w for w in result.warnings)
  assert any(w.startswith("METEOR was skipped: METEOR needs Java") for w in result.warnings)


def test_fallback_warning_is_logged(caplog):
  coco_metrics.compute_caption_metrics(
    {1: "a cat"}, {1: ["a cat"]}, use_java=False, metrics=("Bleu",)
  )
  assert "NOT comparable with published" in caplog.text


@requires_java
def test_fallback_and_ptb_scores_agree_on_ordinary_captions():
  predictions = {i: refs[1].capitalize() + "." for i, refs in RIGHT.items()}
  ptb = coco_metrics.compute_caption_metrics(predictions, RIGHT, metrics=NO_METEOR)
  fallback = coco_metrics.compute_caption_metrics(
    predictions, RIGHT, metrics=NO_METEOR, use_java=False
  )
  assert ptb.tokenizer == "ptb"
  assert fallback.scores == ptb.scores


ORDINARY_CAPTIONS = [
  "A man riding a wave on top of a surfboard.",
  "The man's bike is parked outside of the store.",
  "There's a dog that isn't on the couch; it can't be.",
  "A plate of food with broccoli, carrots, and rice.",
  "A black-and-white photo of a train at a station!",
  'A "STOP" sign on the corner of Main St.',
  "A bathroom with a toilet, sink, and mirror (with lights).",
  "Kids playing frisbee at the park -- on a sunny day...",
  "A 747 flying over 2 buildings at 3:30 p.m. in the U.S.",
  "The dogs' owner is walking them down the street?",
  "It's 5 o'clock and I'm gonna eat a 1,000-calorie cake.",
  "A vase filled with flowers [on a table].",
]


def test_fallback_tokenizer_examples():
  tokenize = coco_metrics.python_ptb_tokenize
  assert tokenize("A red circle.") == "a red circle"
  assert tokenize("There's a dog that isn't on the couch; it can't be.") == (
    "there 's a dog that is n't on the couch it ca n't be"
  )
  assert tokenize("A bathroom (with lights) at 3:30 p.m.") == (
    "a bathroom -lrb- with lights -rrb- at 3:30 p.m."
  )
  assert tokenize('A "STOP" sign -- on Main St.') == "a stop sign on main st."
  assert tokenize("...") == ""


@requires_java
def test_fallback_tokenizer_matches_ptb_tokenizer():
  captions = {i: [{"caption": c}] for i, c in enumerate(ORDINARY_CAPTIONS)}
  tokenized = PTBTokenizer().tokenize(captions)
  for i, caption in enumerate(ORDINARY_CAPTIONS):
    assert coco_metrics.python_ptb_tokenize(caption) == tokenized[i][0], caption


def _fake_meteor(monkeypatch, script):
  """Makes the wrapper's Meteor one whose 'JVM' is a Python process running `script`."""

  class FakeMeteor(Meteor):
    instances: typing.ClassVar[list] = []

    def __init__(self):  # pylint: disable=super-init-not-called
      self.meteor_p = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
      )
      self.lock = threading.Lock()
      FakeMeteor.instances.append(self)

  monkeypatch.setattr(meteor_process, "FastStartMeteor", FakeMeteor)
  return FakeMeteor


@pytest.fixture
def broken_java(tmp_path, monkeypatch):
  """Puts a `java` that fails at once first on PATH, as a broken JRE install would."""
  java = tmp_path / "java"
  java.write_text(
    "#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n"
  )
  java.chmod(0o755)
  monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.usefixtures("broken_java")
def test_crashing_meteor_is_skipped_and_other_metrics_survive(monkeypatch):
  fake = _fake_meteor(
    monkeypatch, "import sys; sys.stderr.write('java.lang.OutOfMemoryError: boom\\n'); sys.exit(1)"
  )
  predictions = {i: refs[1] for i, refs in RIGHT.items()}
  result = coco_metrics.compute_caption_metrics(predictions, RIGHT, use_java=True)
  # PTBTokenizer turns the broken java's silence into one empty caption; that must not pass.
  assert result.tokenizer == "python_fallback"
  assert any(
    "PTBTokenizer failed" in w and "returned 1 of 8 captions" in w for w in result.warnings
  )
  assert "METEOR" not in result.scores
  assert "METEOR failed" in result.skipped["METEOR"]
  assert "OutOfMemoryError: boom" in result.skipped["METEOR"]
  assert any(w.startswith("METEOR was skipped") for w in result.warnings)
  assert {"Bleu_4", "ROUGE_L", "CIDEr"} <= set(result.scores)
  (meteor,) = fake.instances
  assert meteor.meteor_p.poll() is not None
  assert not meteor.lock.locked()  # Meteor.__del__ would otherwise hang on it.


@pytest.mark.usefixtures("broken_java")
def test_unresponsive_meteor_is_killed_after_the_timeout(monkeypatch):
  fake = _fake_meteor(monkeypatch, "import time; time.sleep(60)")
  predictions = {i: refs[1] for i, refs in RIGHT.items()}
  result = coco_metrics.compute_caption_metrics(
    predictions, RIGHT, use_java=True, metrics=("METEOR",), meteor_timeout_s=0.5
  )
  assert result.scores == {}
  assert "did not answer within 0.5 s" in result.skipped["METEOR"]
  assert fake.instances[0].meteor_p.poll() is not None


@pytest.mark.usefixtures("broken_java")
def test_meteor_started_before_a_failure_is_stopped(monkeypatch):
  fake = _fake_meteor(monkeypatch, "import time; time.sleep(60)")

  def failing_tokenize(*args):
    raise KeyboardInterrupt  # as from Ctrl-C while the captions are tokenized

  monkeypatch.setattr(coco_metrics, "_tokenize", failing_tokenize)
  predictions = {i: refs[1] for i, refs in RIGHT.items()}
  with pytest.raises(KeyboardInterrupt):
    coco_metrics.compute_caption_metrics(predictions, RIGHT, use_java=True)
  assert fake.instances[0].meteor_p.poll() is not None
  assert not fake.instances[0].lock.locked()


def test_single_image_warns_about_cider():
  result = coco_metrics.compute_caption_metrics({1: "a cat"}, {1: ["a cat"]}, use_java=False)
  assert result.scores["CIDEr"] == 0.0
  assert any("single image" in w for w in result.warnings)


@pytest.mark.parametrize(
  "predictions, references, message",
  [
    ({}, {1: ["a cat"]}, "predictions is empty"),
    ({1: "a cat", 2: "a dog"}, {1: ["a cat"]}, "have no references, e.g. [2]"),
    ({1: "a cat"}, {1: []}, "references[1] is empty"),
    ({1: "a cat"}, {1: "a cat"}, "must be a list of strings"),
    ({1: None}, {1: ["a cat"]}, "predictions[1] must be a str"),
    ({1: ["a cat"]}, {1: ["a cat"]}, "predictions[1] must be a str"),
    ({1: "a cat"}, {1: ["a cat", 3]}, "references[1][1] must be a str"),
    ({1: "a cat"}, {1: ["a cat", "  "]}, "references[1][1] is blank"),
    ([("a cat",)], {1: ["a cat"]}, "must be dicts"),
  ],
)
def test_invalid_inputs_raise_value_error(predictions, references, message):
  with pytest.raises(ValueError) as error:
    coco_metrics.compute_caption_metrics(predictions, references, use_java=False)
  assert message in str(error.value)


@pytest.mark.parametrize("metrics", [(), ("Spice",), ("Bleu_4",)])
def test_unknown_metrics_raise_value_error(metrics):
  with pytest.raises(ValueError, match="metric"):
    coco_metrics.compute_caption_metrics(
      {1: "a cat"}, {1: ["a cat"]}, metrics=metrics, use_java=False
    )


def test_java_available_returns_a_bool():
  assert isinstance(coco_metrics.java_available(), bool)


def test_java_available_is_false_without_java_on_path(monkeypatch):
  monkeypatch.setenv("PATH", "")
  assert coco_metrics.java_available() is False


@pytest.mark.usefixtures("broken_java")  # Only so that a `java` is on PATH everywhere.
def test_failing_ptb_tokenizer_falls_back_to_python(monkeypatch):

  class TruncatingTokenizer:
    """Behaves like PTBTokenizer when its JVM dies: zip() silently drops the missing lines."""

    def tokenize(self, captions):
      first = next(iter(captions))
      return {first: [c["caption"].lower() for c in captions[first]]}

  monkeypatch.setattr(coco_metrics.ptbtokenizer, "PTBTokenizer", TruncatingTokenizer)
  predictions = {i: refs[1] for i, refs in RIGHT.items()}
  result = coco_metrics.compute_caption_metrics(
    predictions, RIGHT, use_java=True, metrics=NO_METEOR
  )
  expected = coco_metrics.compute_caption_metrics(
    predictions, RIGHT, use_java=False, metrics=NO_METEOR
  )
  assert result.tokenizer == "python_fallback"
  assert result.scores == expected.scores
  assert any(
    "PTBTokenizer failed" in w and "returned 2 of 8 captions" in w for w in result.warnings
  )
