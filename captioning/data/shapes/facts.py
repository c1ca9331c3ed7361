"""Fact accuracy: whether a caption states only true facts about a shapes scene.

Captions of the shapes dataset follow a small grammar::

  caption   := [prefix] mention (connector mention)* [suffix] ["."]
  mention   := ("a" | "an" | "the") SIZE COLOUR SHAPE
  connector := ["is" | "which is"] RELATION_PHRASE | "and" | ", and" | ","
  prefix    := "there is" | "a picture of" | "an image with"
  suffix    := "on a black background"

A relational connector states that the mention before it stands in that
relation to the mention after it. A caption is correct only if it parses, each
mention names exactly one object of the scene (shape, colour and size), every
object is mentioned, the stated relations connect all objects, and every stated
relation holds. Listing objects without relating them, dropping or inventing an
object, and any word outside the grammar all make a caption wrong, so the score
cannot be raised by vague or partial captions.

Mentions must also refer the way English does: an indefinite mention ("a ...")
introduces an object not mentioned before, and an object is named again only as
"the ..." in a stated relation. So "a small purple square and a small purple
square" for a scene of one square names an object twice and is wrong, and a
caption that relates the same two objects twice (a repeated clause, the loop a
decoder falls into) is wrong too: no reference caption does either.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import re

from captioning.data.shapes import scenes

ARTICLES = ("a", "an", "the")
PREFIXES = (("there", "is"), ("a", "picture", "of"), ("an", "image", "with"))
SUFFIXES = (("on", "a", "black", "background"),)
JOINERS = ((",", "and"), ("and",), (",",))
COPULAS = (("which", "is"), ("is",), ())


@dataclasses.dataclass(frozen=True)
class Mention:
  """A noun phrase naming one object: article, size, colour and shape."""

  article: str
  size: str
  color: str
  shape: str

  def text(self) -> str:
    """Returns the words naming the object, without the article."""
    return f"{self.size} {self.color} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Statement:
  """Mention `subject` stands in `relation` to mention `reference`.

  Both are indices into ParsedCaption.mentions.
  """

  subject: int
  relation: str
  reference: int


@dataclasses.dataclass(frozen=True)
class ParsedCaption:
  """A caption that follows the grammar.

  Attributes:
    tokens: The caption's tokens after normalisation.
    mentions: Mentions in order of appearance.
    statements: Relations stated between consecutive mentions.
  """

  tokens: tuple[str, ...]
  mentions: tuple[Mention, ...]
  statements: tuple[Statement, ...]


class CaptionParseError(ValueError):
  """Raised when a caption does not follow the grammar; the message says why."""


def _connectors() -> tuple[tuple[tuple[str, ...], str | None], ...]:
  """All connectors as (tokens, relation or None), longest first."""
  options = [(joiner, None) for joiner in JOINERS]
  for relation, phrases in scenes.RELATION_PHRASES:
    for phrase in phrases:
      for copula in COPULAS:
        options.append((copula + tuple(phrase.split()), relation))
  return tuple(sorted(options, key=lambda o: -len(o[0])))


def _vocabulary() -> frozenset[str]:
  words = set(ARTICLES) | set(scenes.SIZES) | set(scenes.COLORS) | set(scenes.SHAPES)
  for group in (PREFIXES, SUFFIXES):
    for phrase in group:
      words.update(phrase)
  for tokens, _ in _connectors():
    words.update(tokens)
  return frozenset(words)


# Built once at import; both are immutable.
CONNECTORS = _connectors()
VOCABULARY = _vocabulary()


def tokenize(caption: str) -> list[str]:
  """Lowercases a caption and splits it into words, "," and "." tokens."""
  return re.sub(r"([,.])", r" \1 ", caption.lower()).split()


def _parse_mention(tokens: Sequence[str], pos: int) -> Mention | None:
  """Returns the mention starting at `pos`, or None if there is none."""
  if pos + 4 > len(tokens):
    return None
  article, size, color, shape = tokens[pos : pos + 4]
  if (
    article in ARTICLES
    and size in scenes.SIZES
    and color in scenes.COLORS
    and shape in scenes.SHAPES
  ):
    return Mention(article, size, color, shape)
  return None


def _mention_error(tokens: Sequence[str], pos: int) -> str:
  """Explains why no mention starts at `pos`."""
  words = " ".join(tokens[pos : pos + 4])
  if pos >= len(tokens):
    return "caption ends where a mention is expected"
  if tokens[pos] not in ARTICLES:
    return f"expected a mention (article size colour shape) at {words!r}"
  return f"incomplete mention {words!r}: needs article, size, colour and shape"


def parse_caption(caption: str) -> ParsedCaption:
  """Parses a caption of the shapes grammar.

  Args:
    caption: Caption text; case and spacing around "," and "." are free.

  Returns:
    The parsed caption.

  Raises:
    CaptionParseError: If the caption does not follow the grammar.
  """
  tokens = tokenize(caption)
  if tokens and tokens[-1] == ".":
    tokens = tokens[:-1]
  if not tokens:
    raise CaptionParseError("empty caption")
  for token in tokens:
    if token not in VOCABULARY:
      raise CaptionParseError(f"unknown word {token!r}")
  end = len(tokens)
  for suffix in SUFFIXES:
    if tuple(tokens[end - len(suffix) :]) == suffix:
      end -= len(suffix)
      break
  body = tokens[:end]
  pos = 0
  for prefix in PREFIXES:
    # A mention never starts with a prefix, so consuming it is unambiguous.
    if tuple(body[: len(prefix)]) == prefix:
      pos = len(prefix)
      break
  first = _parse_mention(body, pos)
  if first is None:
    raise CaptionParseError(_mention_error(body, pos))
  mentions = [first]
  statements = []
  pos += 4
  while pos < len(body):
    matched = None
    for words, relation in CONNECTORS:
      if tuple(body[pos : pos + len(words)]) == words:
        matched = (words, relation)
        break
    if matched is None:
      raise CaptionParseError(f"unexpected words {' '.join(body[pos : pos + 4])!r}")
    words, relation = matched
    pos += len(words)
    mention = _parse_mention(body, pos)
    if mention is None:
      if relation is not None and pos >= len(body):
        raise CaptionParseError(f"dangling relation {' '.join(words)!r}")
      raise CaptionParseError(_mention_error(body, pos))
    if relation is not None:
      statements.append(Statement(len(mentions) - 1, relation, len(mentions)))
    mentions.append(mention)
    pos += 4
  return ParsedCaption(tuple(tokens), tuple(mentions), tuple(statements))


def _resolve(mention: Mention, scene: Sequence[scenes.ShapeObject]) -> tuple[int | None, str]:
  """Returns the index of the one object a mention names, or None and why."""
  matches = [
    i
    for i, obj in enumerate(scene)
    if (obj.shape, obj.color, obj.size) == (mention.shape, mention.color, mention.size)
  ]
  if len(matches) == 1:
    return matches[0], ""
  if len(matches) > 1:
    return None, f"{mention.text()!r} is ambiguous in this scene"
  # Name the closest object so that failure reasons show what was wrong.
  for obj in scene:
    if (obj.color, obj.shape) == (mention.color, mention.shape):
      return None, f"wrong size: {mention.text()!r} is {obj.size}"
  for obj in scene:
    if obj.shape == mention.shape and obj.size == mention.size:
      return None, f"wrong colour: no {mention.text()!r}, there is a {scenes.mention_text(obj)}"
  for obj in scene:
    if obj.color == mention.color and obj.size == mention.size:
      return None, f"wrong shape: no {mention.text()!r}, there is a {scenes.mention_text(obj)}"
  return None, f"no {mention.text()!r} in the scene"


def _connected(num_objects: int, edges: Sequence[tuple[int, int]]) -> bool:
  parent = list(range(num_objects))

  def root(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for a, b in edges:
    parent[root(a)] = root(b)
  return len({root(i) for i in range(num_objects)}) == 1


def check_caption(caption: str, scene: Sequence[scenes.ShapeObject]) -> tuple[bool, str]:
  """Judges a caption against a scene.

  Args:
    caption: Generated caption.
    scene: The image's objects.

  Returns:
    (correct, reason): reason is "ok" when correct, otherwise what is wrong.
  """
  try:
    parsed = parse_caption(caption)
  except CaptionParseError as error:
    return False, f"unparseable: {error}"
  objects = []
  for mention in parsed.mentions:
    index, reason = _resolve(mention, scene)
    if index is None:
      return False, reason
    if index in objects:
      if mention.article != "the":
        return False, f"{mention.text()!r} is introduced twice ('a' names a new object)"
      if not any(len(objects) in (st.subject, st.reference) for st in parsed.statements):
        return False, f"'the {mention.text()}' names an object again without relating it"
    objects.append(index)
  related = set()
  for st in parsed.statements:
    pair = frozenset((objects[st.subject], objects[st.reference]))
    if pair in related:
      return False, "relates the same two objects twice (a repeated clause)"
    related.add(pair)
    subject, reference = scene[objects[st.subject]], scene[objects[st.reference]]
    if not scenes.relation_holds(subject, reference, st.relation):
      return False, (
        f"false relation: {scenes.mention_text(subject)!r} is not {st.relation} "
        f"of {scenes.mention_text(reference)!r}"
      )
  missing = [scenes.mention_text(obj) for i, obj in enumerate(scene) if i not in objects]
  if missing:
    return False, f"objects not mentioned: {missing}"
  edges = [(objects[st.subject], objects[st.reference]) for st in parsed.statements]
  if len(scene) > 1 and not _connected(len(scene), edges):
    return False, "stated relations do not connect all objects"
  return True, "ok"


def caption_is_correct(caption: str, scene: Sequence[scenes.ShapeObject]) -> bool:
  """Returns whether every fact a caption states is true of the scene."""
  return check_caption(caption, scene)[0]


def fact_accuracy(
  predictions: Mapping[int, str], scene_by_id: Mapping[int, Sequence[scenes.ShapeObject]]
) -> dict[str, float]:
  """Scores generated captions by fact accuracy.

  Args:
    predictions: image_id -> generated caption.
    scene_by_id: image_id -> the image's objects; must cover every prediction.

  Returns:
    {"fact_accuracy": share of correct captions, "fact_accuracy_{k}obj":
    share among images with k objects (only for counts present),
    "num_scored": number of captions}. With no predictions fact_accuracy is
    0.0 and no per-count shares appear.

  Raises:
    KeyError: If a prediction's image_id has no scene.
  """
  totals = {}
  correct = {}
  for image_id, caption in predictions.items():
    if image_id not in scene_by_id:
      raise KeyError(f"Prediction for image_id {image_id!r} has no scene to check against.")
    scene = scene_by_id[image_id]
    count = len(scene)
    totals[count] = totals.get(count, 0) + 1
    correct[count] = correct.get(count, 0) + int(caption_is_correct(caption, scene))
  num = sum(totals.values())
  result = {"fact_accuracy": sum(correct.values()) / num if num else 0.0}
  for count in sorted(totals):
    result[f"fact_accuracy_{count}obj"] = correct[count] / totals[count]
  result["num_scored"] = num
  return result
