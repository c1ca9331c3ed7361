"""Tests for the caption grammar parser and the fact accuracy scorer."""

import pytest

from captioning.data.shapes import facts
from captioning.data.shapes import generation
from captioning.data.shapes import scenes


def _obj(shape, color, size, row, col):
  return scenes.ShapeObject(shape, color, size, row, col, (0, 0, 1, 1))


ONE = (_obj("circle", "red", "small", 0, 0),)
# Side by side: only left/right relations hold.
TWO = (_obj("circle", "red", "small", 1, 0), _obj("square", "blue", "large", 1, 2))
# One above the other: only above/below relations hold.
VERTICAL = (_obj("triangle", "green", "large", 0, 1), _obj("circle", "yellow", "small", 2, 1))
THREE = (
  _obj("circle", "red", "small", 0, 0),
  _obj("square", "blue", "large", 0, 2),
  _obj("triangle", "yellow", "large", 2, 2),
)


@pytest.fixture(scope="module")
def generated():
  return {
    name: generation.generate_split(name, 500, seed=1, image_size=32) for name in scenes.SPLITS
  }


def test_every_reference_caption_is_correct(generated):
  for name, split in generated.items():
    for captions, scene in zip(split.captions, split.scenes):
      for caption in captions:
        ok, reason = facts.check_caption(caption, scene)
        assert ok, f"{name}: {caption!r} judged wrong: {reason}"


def test_references_score_one_per_object_count(generated):
  split = generated["test"]
  predictions = {int(i): c[2] for i, c in zip(split.image_ids, split.captions)}
  scenes = {int(i): s for i, s in zip(split.image_ids, split.scenes)}
  result = facts.fact_accuracy(predictions, scenes)
  assert result == {
    "fact_accuracy": 1.0,
    "fact_accuracy_1obj": 1.0,
    "fact_accuracy_2obj": 1.0,
    "fact_accuracy_3obj": 1.0,
    "num_scored": 500,
  }


def test_captions_of_other_scenes_are_wrong(generated):
  split = generated["train"]

  def names(scene):
    return sorted((o.shape, o.color, o.size) for o in scene)

  checked = 0
  for captions, source, target in zip(split.captions, split.scenes, split.scenes[1:]):
    if names(source) != names(target):
      checked += 1
      assert not any(facts.caption_is_correct(c, target) for c in captions), captions
  assert checked > 400


@pytest.mark.parametrize(
  "scene, caption",
  [
    (ONE, "a small red circle"),
    (ONE, "there is a small red circle on a black background"),
    (ONE, "A Small Red Circle."),
    (TWO, "a small red circle to the left of a large blue square"),
    (TWO, "a large blue square is right of the small red circle ."),
    (
      TWO,
      "there is a small red circle and a large blue square, the small red circle is "
      "left of the large blue square",
    ),
    (VERTICAL, "a large green triangle over a small yellow circle"),
    (VERTICAL, "an image with a small yellow circle under a large green triangle"),
    (
      THREE,
      "a small red circle left of a large blue square which is above a large yellow triangle",
    ),
    (
      THREE,
      "there is a small red circle to the left of a large blue square , and a large "
      "yellow triangle is below the large blue square",
    ),
    (
      THREE,
      "a large yellow triangle below a large blue square and a small red circle above "
      "the large yellow triangle",
    ),
  ],
)
def test_true_captions(scene, caption):
  assert facts.check_caption(caption, scene) == (True, "ok")


@pytest.mark.parametrize(
  "scene, caption, reason",
  [
    (TWO, "a small green circle to the left of a large blue square", "wrong colour"),
    (TWO, "a large red circle to the left of a large blue square", "wrong size"),
    (TWO, "a small red square to the left of a large blue square", "wrong shape"),
    (TWO, "a small red circle to the right of a large blue square", "false relation"),
    (TWO, "a large blue square left of a small red circle", "false relation"),
    (TWO, "a small red circle above a large blue square", "false relation"),
    (VERTICAL, "a large green triangle below a small yellow circle", "false relation"),
    (VERTICAL, "a small yellow circle is over a large green triangle", "false relation"),
    (VERTICAL, "a large green triangle left of a small yellow circle", "false relation"),
    (TWO, "a small red circle", "not mentioned"),
    (THREE, "a small red circle left of a large blue square", "not mentioned"),
    (TWO, "a small red circle and a large blue square", "connect"),
    (TWO, "there is a small red circle , a large blue square", "connect"),
    (
      THREE,
      "a small red circle left of a large blue square and a large yellow triangle",
      "connect",
    ),
    (
      THREE,
      "a small red circle left of a large blue square , and the small red circle above "
      "the small red circle and a large yellow triangle",
      "false relation",
    ),
    (
      TWO,
      "a small red circle left of a large blue square and a small purple triangle below "
      "the large blue square",
      "no 'small purple triangle'",
    ),
    (ONE, "a small red circle left of a large blue square", "no 'large blue square'"),
    (ONE, "a small red circle left of the small red circle", "false relation"),
    (TWO, "a small red circle to the left of", "dangling relation"),
    (TWO, "a small red circle is left of", "dangling relation"),
    (TWO, "a small red circle to the left", "unexpected words"),
    (TWO, "a small red circle to the left of a large blue", "incomplete mention"),
    (TWO, "a small red circle to the left of a large blue square square", "unexpected words"),
    (TWO, "", "empty caption"),
    (TWO, "   .", "empty caption"),
    (TWO, "a small red <unk> to the left of a large blue square", "unknown word '<unk>'"),
    (TWO, "a small red circle to the left of a big blue square", "unknown word 'big'"),
    (TWO, "a small red circle . a large blue square", "unknown word '.'"),
    (ONE, "a a a small small red red circle circle", "incomplete mention"),
    (ONE, "circle circle circle circle", "expected a mention"),
    (ONE, "small red circle", "expected a mention"),
    (ONE, "a red circle", "incomplete mention"),
    (TWO, "a small red circle there is a large blue square", "unexpected words"),
    (
      TWO,
      "a small red circle on a black background left of a large blue square",
      "unexpected words",
    ),
    (TWO, "a small red circle to the left of on a black background", "dangling relation"),
    # An object named twice, and repeated-clause loops: every fact true, still wrong.
    (ONE, "a small red circle and a small red circle", "introduced twice"),
    (ONE, "there is a small red circle , a small red circle", "introduced twice"),
    (
      TWO,
      "a small red circle left of a large blue square and a small red circle left of a large "
      "blue square",
      "introduced twice",
    ),
    (
      TWO,
      "there is a small red circle and a large blue square , the small red circle is left of "
      "the large blue square , the small red circle is left of the large blue square",
      "repeated clause",
    ),
    (
      TWO,
      "a small red circle left of a large blue square , the large blue square is right of the "
      "small red circle",
      "repeated clause",
    ),
    (
      THREE,
      "a small red circle left of a large blue square and a large yellow triangle under the "
      "large blue square , and the small red circle is left of the large blue square",
      "repeated clause",
    ),
    (ONE, "a small red circle and the small red circle", "again without relating it"),
    (TWO, "a small red circle left of a large blue square , the large blue square", "again"),
  ],
)
def test_false_or_malformed_captions(scene, caption, reason):
  ok, why = facts.check_caption(caption, scene)
  assert not ok
  assert reason in why
  assert not facts.caption_is_correct(caption, scene)


def test_ambiguous_mention_is_wrong():
  twins = (_obj("circle", "red", "small", 0, 0), _obj("circle", "red", "small", 0, 2))
  ok, why = facts.check_caption("a small red circle left of a small red circle", twins)
  assert not ok and "ambiguous" in why


def test_parse_caption_structure():
  parsed = facts.parse_caption(
    "There is a small red circle left of a large blue square which is above "
    "the large yellow triangle and a small green circle under the large yellow triangle."
  )
  assert [m.text() for m in parsed.mentions] == [
    "small red circle",
    "large blue square",
    "large yellow triangle",
    "small green circle",
    "large yellow triangle",
  ]
  assert parsed.mentions[2].article == "the"
  assert parsed.statements == (
    facts.Statement(0, "left", 1),
    facts.Statement(1, "above", 2),
    facts.Statement(3, "below", 4),
  )
  # The "," before "which is" is not a connector of the grammar.
  with pytest.raises(facts.CaptionParseError):
    facts.parse_caption("a small red circle , which is above a large blue square")


@pytest.mark.parametrize("caption", ["", "<unk>", "a small red", "a small red circle left of"])
def test_parse_caption_raises(caption):
  with pytest.raises(facts.CaptionParseError):
    facts.parse_caption(caption)


def test_fact_accuracy_aggregates():
  predictions = {
    1: "a small red circle",  # right
    2: "a large red circle",  # wrong size
    3: "a small red circle left of a large blue square",  # right
    4: "a small red circle left of a large blue square which is above a large yellow "
    "triangle",  # right
    5: "a small red circle and a large blue square and a large yellow triangle",  # unrelated
  }
  scenes = {1: ONE, 2: ONE, 3: TWO, 4: THREE, 5: THREE, 6: VERTICAL}
  result = facts.fact_accuracy(predictions, scenes)
  assert result["fact_accuracy"] == pytest.approx(3 / 5)
  assert result["fact_accuracy_1obj"] == pytest.approx(0.5)
  assert result["fact_accuracy_2obj"] == pytest.approx(1.0)
  assert result["fact_accuracy_3obj"] == pytest.approx(0.5)
  assert result["num_scored"] == 5


def test_fact_accuracy_omits_absent_counts():
  result = facts.fact_accuracy({7: "a large blue square left of a small red circle"}, {7: TWO})
  assert result == {"fact_accuracy": 0.0, "fact_accuracy_2obj": 0.0, "num_scored": 1}


def test_fact_accuracy_empty():
  assert facts.fact_accuracy({}, {1: ONE}) == {"fact_accuracy": 0.0, "num_scored": 0}


def test_fact_accuracy_missing_scene():
  with pytest.raises(KeyError, match="image_id 9"):
    facts.fact_accuracy({1: "a small red circle", 9: "a small red circle"}, {1: ONE})
