"""COCO caption metrics (BLEU 1-4, METEOR, ROUGE-L, CIDEr) computed with pycocoevalcap.

The numbers match the COCO caption evaluation (`pycocoevalcap.eval.COCOEvalCap`): captions are
tokenized with pycocoevalcap's PTBTokenizer and scored at corpus level by pycocoevalcap's own
scorers. SPICE is opt-in (`metrics=(..., "SPICE")`) and runs only where its Stanford CoreNLP
models are already installed: pycocoevalcap would download them on first use, and this project
never does.

Both the PTB tokenizer and METEOR run in Java. Without Java the captions are tokenized by a
pure-Python approximation of the PTB tokenizer, METEOR is skipped, and the result says so: such
scores are fine for comparing runs of this project with each other, but not with published
numbers. A Java subprocess that fails costs only its own metric, never the others.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import types
import unicodedata

from absl import logging
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

from captioning.evaluators import meteor as meteor_process

SUPPORTED_METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")
OPTIONAL_METRICS = ("SPICE",)  # asked for by name only
PTB_TOKENIZER = "ptb"
PYTHON_FALLBACK_TOKENIZER = "python_fallback"
METEOR_NEEDS_JAVA = meteor_process.NEEDS_JAVA

# METEOR takes well under a minute on a 5,000-image split; the limit only exists so that a wedged
# JVM cannot stall an evaluation forever.
DEFAULT_METEOR_TIMEOUT_S = 1800.0

# The tokens PTBTokenizer deletes after tokenizing. Its list spells the bracket tokens in upper case
# ("-LRB-") but runs the Java tokenizer with -lowerCase, so brackets survive as "-lrb-"; the
# fallback keeps that quirk by filtering with the very same list.
_PTB_PUNCTUATIONS = frozenset(ptbtokenizer.PUNCTUATIONS)

# Java's PTBTokenizer maps these characters to PTB escape tokens.
_PTB_CHAR_TOKENS = types.MappingProxyType(
  {
    "(": "-lrb-",
    ")": "-rrb-",
    "[": "-lsb-",
    "]": "-rsb-",
    "{": "-lcb-",
    "}": "-rcb-",
    '"': "''",
    "\u201c": "``",
    "\u201d": "''",
    "\u2026": "...",
    "\u2014": "--",
    "\u2013": "--",
  }
)
_ABBREVIATIONS = (
  "mr",
  "mrs",
  "ms",
  "dr",
  "st",
  "jr",
  "sr",
  "prof",
  "mt",
  "vs",
  "etc",
  "inc",
  "ltd",
  "co",
  "ave",
)
_SPLIT_WORDS = re.compile(r"\b(?:(gon)(na)|(wan)(na)|(got)(ta)|(can)(not))\b")
_NEGATION = re.compile(r"(?<=\w)n't\b")
_CLITIC = re.compile(r"(?<=\w)'(s|re|ve|ll|d|m)\b")
_FALLBACK_TOKEN = re.compile(
  r"(?:[a-z]\.){2,}"  # initialisms keep their dots: "u.s.", "p.m.", "e.g."
  rf"|\b(?:{'|'.join(_ABBREVIATIONS)})\.(?!\w)"
  r"|\bno\.(?=\s*\d)"  # "No. 5", but not a sentence-final "no."
  r"|n't|'(?:s|re|ve|ll|d|m)\b"
  r"|\d+(?:[.,:/]\d+)+(?:-\w+)*"  # 3.5, 1,000-piece, 10:30, 1/2
  r"|\w+(?:[-/&.]\w+|'[^\W\d_]+)*"  # well-known, a/b, o'clock
  r"|\.{2,}|[?!]{2,}|-{2,}|``|''"
  r"|\S"
)


@dataclasses.dataclass(frozen=True)
class CaptionMetrics:
  """Corpus-level caption metrics.

  Attributes:
    scores: metric name -> score, named as the COCO caption evaluation names them ("Bleu_1" ..
      "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"); only metrics that were computed appear.
    tokenizer: "ptb" when pycocoevalcap's Java PTBTokenizer tokenized the captions,
      "python_fallback" when the pure-Python approximation did.
    skipped: metric name -> why it was not computed.
    warnings: human-readable caveats about these scores (also logged).
    image_ids: the scored images, in the order of `per_image`.
    per_image: metric name -> each image's own score, where the metric has one (BLEU's are
      the per-image BLEU of pycocoevalcap, not parts of the corpus BLEU).
  """

  scores: dict[str, float]
  tokenizer: str
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  warnings: list[str] = dataclasses.field(default_factory=list)
  image_ids: list = dataclasses.field(default_factory=list)
  per_image: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def java_available():
  """Returns whether a working `java` executable is on PATH.

  Probes afresh on every call (about a tenth of a second) so that installing a JRE mid-session
  is noticed.
  """
  java = shutil.which("java")
  if java is None:
    return False
  try:
    completed = subprocess.run([java, "-version"], capture_output=True, timeout=60, check=False)
  except (OSError, subprocess.SubprocessError):
    return False
  return completed.returncode == 0


def python_ptb_tokenize(caption):
  """Tokenizes one caption the way pycocoevalcap's PTBTokenizer does, without Java.

  Lowercases, splits off punctuation and clitics ("dog's" -> "dog 's", "can't" -> "ca n't"),
  maps brackets and quotes to their PTB tokens, then drops the tokens PTBTokenizer drops. Ordinary
  captions come out identical to PTBTokenizer's output; exotic text (emoticons, URLs, rare
  abbreviations) may differ slightly.

  Args:
    caption: a caption string.

  Returns:
    The space-joined tokens, e.g. "A dog's ball (red)." -> "a dog 's ball -lrb- red -rrb-".
  """
  # Java's tokenizer cannot read characters outside the Basic Multilingual Plane (emoji) and
  # drops them, and it reads typographic apostrophes as plain ones.
  text = "".join(c for c in caption if ord(c) <= 0xFFFF)
  text = unicodedata.normalize("NFC", text).replace("\u2019", "'").replace("\u2018", "'").lower()
  text = _SPLIT_WORDS.sub(lambda m: " ".join(g for g in m.groups() if g), text)
  text = _NEGATION.sub(" n't", text)
  text = _CLITIC.sub(r" '\1", text)
  tokens = [_PTB_CHAR_TOKENS.get(t, t) for t in _FALLBACK_TOKEN.findall(text)]
  # Java reads any run of two or more dots as an ellipsis.
  tokens = ["..." if t.startswith("..") else t for t in tokens]
  return " ".join(t for t in tokens if t not in _PTB_PUNCTUATIONS)


def compute_caption_metrics(
  predictions,
  references,
  *,
  metrics=SUPPORTED_METRICS,
  use_java=None,
  meteor_timeout_s=DEFAULT_METEOR_TIMEOUT_S,
):
  """Scores predicted captions against reference captions, COCO-evaluation style.

  Args:
    predictions: image id -> the predicted caption (one string per image).
    references: image id -> the list of reference captions. Ids without a prediction are
      ignored (with a warning): CIDEr's IDF is computed over the scored images only.
    metrics: which of "Bleu" (all of Bleu_1..Bleu_4), "METEOR", "ROUGE_L", "CIDEr" to compute.
    use_java: whether to run the Java tools (PTBTokenizer, METEOR); None detects Java.
    meteor_timeout_s: seconds after which a METEOR subprocess that has not answered is killed
      and METEOR skipped; None waits forever.

  Returns:
    A `CaptionMetrics`.

  Raises:
    ValueError: if the inputs are empty, malformed, or name an unknown metric.
  """
  metrics = check_metrics(metrics)
  image_ids = _validate_captions(predictions, references)
  no_java_reason = "use_java=False was passed"
  if use_java is None:
    use_java = java_available()
    no_java_reason = "Java was not found (`java -version` must run)"
  warnings = []
  skipped = {}

  unused = len(references) - len(image_ids)
  if unused:
    warnings.append(
      f"{unused} reference image(s) have no prediction and are not scored; "
      "CIDEr's IDF is computed over the scored images only."
    )
  if len(image_ids) == 1 and "CIDEr" in metrics:
    warnings.append(
      "CIDEr's IDF is degenerate on a single image (every n-gram gets weight 0, "
      "so CIDEr is 0); score several images together."
    )

  if "SPICE" in metrics:
    reason = spice_unavailable() if use_java else "SPICE needs Java"
    if reason:
      skipped["SPICE"] = reason

  meteor = None
  if "METEOR" in metrics:
    if use_java:
      # The JVM needs several seconds to load METEOR's paraphrase table; starting it first lets
      # that overlap with the tokenizer and the other scorers.
      meteor, error = meteor_process.start()
      if error:
        skipped["METEOR"] = error
    else:
      skipped["METEOR"] = METEOR_NEEDS_JAVA

  scores, per_image = {}, {}
  try:
    # The Java tokenizer reads one caption per line and treats \r, \u2028 and friends as line
    # breaks too, which would silently shift every later caption onto the wrong image.
    gts = {i: [{"caption": " ".join(c.split())} for c in references[i]] for i in image_ids}
    res = {i: [{"caption": " ".join(predictions[i].split())}] for i in image_ids}
    gts, res, tokenizer = _tokenize(gts, res, use_java, no_java_reason, warnings)

    empty = sum(1 for i in image_ids if not res[i][0])
    if empty:
      warnings.append(f"{empty} prediction(s) are empty after tokenization; they score zero.")
    empty = sum(1 for i in image_ids for ref in gts[i] if not ref)
    if empty:
      # ROUGE-L scores an empty prediction as a perfect match for an empty reference.
      warnings.append(
        f"{empty} reference caption(s) are empty after tokenization (punctuation "
        "only?); they distort the scores."
      )

    if "Bleu" in metrics:
      # verbose=0 only silences Bleu's prints; COCOEvalCap's verbose=1 gives the same numbers.
      bleu, each = Bleu(4).compute_score(gts, res, verbose=0)
      scores.update({f"Bleu_{n + 1}": float(s) for n, s in enumerate(bleu)})
      per_image.update({f"Bleu_{n + 1}": [float(x) for x in each[n]] for n in range(4)})
    if meteor is not None:
      score, each, error = meteor_process.run(meteor, gts, res, meteor_timeout_s)
      meteor = None
      if error:
        skipped["METEOR"] = error
      else:
        scores["METEOR"], per_image["METEOR"] = score, each
    if "ROUGE_L" in metrics:
      score, each = Rouge().compute_score(gts, res)
      scores["ROUGE_L"], per_image["ROUGE_L"] = float(score), [float(x) for x in each]
    if "CIDEr" in metrics:
      score, each = Cider().compute_score(gts, res)
      scores["CIDEr"], per_image["CIDEr"] = float(score), [float(x) for x in each]
    if "SPICE" in metrics and "SPICE" not in skipped:
      score, error = _run_spice(gts, res)
      if error:
        skipped["SPICE"] = error
      else:
        scores["SPICE"] = score
  finally:
    if meteor is not None:
      meteor_process.close(meteor)

  for name in ("METEOR", "SPICE"):
    if name in skipped:
      warnings.append(f"{name} was skipped: {skipped[name]}")
  for warning in warnings:
    logging.warning("Caption metrics: %s", warning)
  return CaptionMetrics(
    scores=scores,
    tokenizer=tokenizer,
    skipped=skipped,
    warnings=warnings,
    image_ids=list(image_ids),
    per_image=per_image,
  )


def check_metrics(metrics):
  """Returns `metrics` as a tuple after checking every name is supported (raises ValueError)."""
  if isinstance(metrics, str):
    metrics = (metrics,)
  metrics = tuple(metrics)
  if not metrics:
    raise ValueError(f"No metrics requested; choose from {SUPPORTED_METRICS}.")
  unknown = [m for m in metrics if m not in SUPPORTED_METRICS + OPTIONAL_METRICS]
  if unknown:
    raise ValueError(
      f"Unknown metric(s) {unknown}; supported are {SUPPORTED_METRICS + OPTIONAL_METRICS} "
      "('Bleu' computes Bleu_1..Bleu_4)."
    )
  return metrics


def _validate_captions(predictions, references):
  """Checks the caption dictionaries and returns the prediction ids in order.

  Raises:
    ValueError: describing the first problem found.
  """
  if not isinstance(predictions, dict) or not isinstance(references, dict):
    raise ValueError(
      "predictions and references must be dicts keyed by image id, got "
      f"{type(predictions).__name__} and {type(references).__name__}."
    )
  if not predictions:
    raise ValueError("predictions is empty: there is nothing to score.")
  missing = [i for i in predictions if i not in references]
  if missing:
    raise ValueError(f"{len(missing)} prediction id(s) have no references, e.g. {missing[:5]}.")
  for image_id, caption in predictions.items():
    if not isinstance(caption, str):
      raise ValueError(
        f"predictions[{image_id!r}] must be a str, got {type(caption).__name__}: {caption!r}"
      )
    refs = references[image_id]
    if isinstance(refs, str) or not isinstance(refs, (list, tuple)):
      raise ValueError(
        f"references[{image_id!r}] must be a list of strings, got {type(refs).__name__}: {refs!r}"
      )
    if not refs:
      raise ValueError(
        f"references[{image_id!r}] is empty; every scored image needs at least "
        "one reference caption."
      )
    for k, ref in enumerate(refs):
      if not isinstance(ref, str):
        raise ValueError(
          f"references[{image_id!r}][{k}] must be a str, got {type(ref).__name__}: {ref!r}"
        )
      if not ref.strip():
        raise ValueError(f"references[{image_id!r}][{k}] is blank.")
  return list(predictions)


def _tokenize(gts, res, use_java, no_java_reason, warnings):
  """Tokenizes both sides with PTBTokenizer, or the Python fallback; returns (gts, res, name)."""
  if use_java:
    try:
      return _ptb_tokenize(gts), _ptb_tokenize(res), PTB_TOKENIZER
    except Exception as e:  # pylint: disable=broad-except
      reason = f"pycocoevalcap's PTBTokenizer failed ({type(e).__name__}: {e})"
  else:
    reason = no_java_reason
  warnings.append(
    f"{reason}, so captions were tokenized by a pure-Python approximation of the "
    "PTB tokenizer: these scores are NOT comparable with published COCO numbers, "
    "which use PTB tokenization."
  )
  tokenize = lambda captions: {
    i: [python_ptb_tokenize(c["caption"]) for c in caps] for i, caps in captions.items()
  }
  return tokenize(gts), tokenize(res), PYTHON_FALLBACK_TOKENIZER


def _ptb_tokenize(captions):
  """Runs pycocoevalcap's PTBTokenizer and checks that no caption went missing."""
  # PTBTokenizer writes a temporary file into its package directory before starting Java and
  # leaves it there when `java` cannot be started.
  if shutil.which("java") is None:
    raise RuntimeError("`java` is not on PATH")
  tokenized = ptbtokenizer.PTBTokenizer().tokenize(captions)
  # PTBTokenizer pairs output lines with ids through zip(), so a Java failure shows up only as
  # missing captions, never as an error.
  if any(len(tokenized.get(i, ())) != len(caps) for i, caps in captions.items()):
    got = sum(len(v) for v in tokenized.values())
    want = sum(len(v) for v in captions.values())
    raise RuntimeError(f"the Java tokenizer returned {got} of {want} captions")
  return tokenized


def spice_directory():
  """Where pycocoevalcap's SPICE keeps its jar and the Stanford CoreNLP models it needs."""
  from pycocoevalcap.spice import spice  # pylint: disable=import-outside-toplevel

  return os.path.dirname(os.path.abspath(spice.__file__))


def spice_unavailable():
  """Why SPICE cannot run here without a download, or None if it can."""
  from pycocoevalcap.spice import get_stanford_models  # pylint: disable=import-outside-toplevel

  folder = spice_directory()
  models = os.path.join(folder, get_stanford_models.SPICELIB, f"{get_stanford_models.JAR}.jar")
  if not os.path.exists(models):
    return (
      f"SPICE needs the Stanford CoreNLP models at {models}; this project never downloads "
      "them (pycocoevalcap's get_stanford_models.get_stanford_models() does, once)"
    )
  if shutil.which("java") is None:
    return "SPICE needs Java"
  return None


def _run_spice(gts, res):
  """Runs pycocoevalcap's SPICE; returns (score, None) or (None, error)."""
  from pycocoevalcap.spice.spice import Spice  # pylint: disable=import-outside-toplevel

  try:
    score, _ = Spice().compute_score(gts, res)
    return float(score), None
  except Exception as e:  # pylint: disable=broad-except
    return None, f"SPICE failed ({type(e).__name__}: {e})"
