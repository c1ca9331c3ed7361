"""The caption templates of the `shapes` dataset and the true captions they give a scene."""

from collections.abc import Sequence

from captioning.data.shapes import scenes

# Templates use {A}, {B}, {C} for "size colour shape" words; each is paired
# with the (subject, reference) roles whose true relation phrase it needs,
# filled in as {AB}, {CB}, ...
_TEMPLATES_1 = tuple(
  (t, ())
  for t in (
    "a {A}",
    "there is a {A}",
    "a picture of a {A}",
    "a {A} on a black background",
    "an image with a {A}",
    "there is a {A} on a black background",
    "an image with a {A} on a black background",
  )
)
_TEMPLATES_2 = tuple(
  (t, ("AB",))
  for t in (
    "a {A} {AB} a {B}",
    "there is a {A} {AB} a {B}",
    "a {A} is {AB} a {B}",
    "a picture of a {A} {AB} a {B}",
    "an image with a {A} {AB} a {B}",
    "a {A} {AB} a {B} on a black background",
    "there is a {A} and a {B} , the {A} is {AB} the {B}",
  )
)
_TEMPLATES_3 = (
  ("a {A} {AB} a {B} and a {C} {CB} the {B}", ("AB", "CB")),
  ("a {A} {AB} a {B} which is {BC} a {C}", ("AB", "BC")),
  ("there is a {A} {AB} a {B} , and a {C} is {CB} the {B}", ("AB", "CB")),
  ("there is a {A} {AB} a {B} and a {C} {CA} the {A}", ("AB", "CA")),
  ("a {A} is {AB} a {B} and the {B} is {BC} a {C}", ("AB", "BC")),
  ("a picture of a {A} {AB} a {B} which is {BC} a {C}", ("AB", "BC")),
  ("a {A} {AB} a {B} , and a {C} {CA} the {A}", ("AB", "CA")),
)
_TEMPLATES = (_TEMPLATES_1, _TEMPLATES_2, _TEMPLATES_3)


def make_captions(scene: Sequence[scenes.ShapeObject], num_captions: int, u) -> list[str]:
  """Returns `num_captions` true captions of a scene from varied templates.

  Args:
    scene: One to three objects in distinct cells.
    num_captions: How many captions to produce.
    u: Source of randomness, with `permutation(n)` and `below(n)` (the generator's
      buffered uniforms).
  """
  phrases_of = dict(scenes.RELATION_PHRASES)
  # Every relation has the same number of phrases, so a uniform pick over all
  # phrases of the true relations is a uniform pick of relation, then phrase.
  # Diagonal pairs have two true relations and either may be used.
  pair_phrases = {
    (i, j): tuple(p for r in scenes.true_relations(a, b) for p in phrases_of[r])
    for i, a in enumerate(scene)
    for j, b in enumerate(scene)
    if i != j
  }
  names = [scenes.mention_text(obj) for obj in scene]
  templates = _TEMPLATES[len(scene) - 1]
  order = []
  while len(order) < num_captions:
    # Without replacement within a pass so an image's captions differ.
    order.extend(u.permutation(len(templates)))
  captions = []
  for t in order[:num_captions]:
    template, relations = templates[t]
    roles = dict(zip("ABC", u.permutation(len(scene))))
    fields = {name: names[i] for name, i in roles.items()}
    for pair in relations:
      options = pair_phrases[roles[pair[0]], roles[pair[1]]]
      fields[pair] = options[u.below(len(options))]
    captions.append(template.format(**fields))
  return captions
