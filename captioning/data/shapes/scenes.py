"""The world of the embedded "shapes" captioning dataset: its objects and relations.

Each image is a black square holding one to three coloured shapes placed in
distinct cells of a 3x3 grid. Because objects never share a cell and spatial
relations are defined on cells, every relation between two objects is
unambiguous, and because no two objects of a scene share a (colour, shape)
pair, every mention of an object in a caption names exactly one object. That
makes the captions mechanically checkable (see
`captioning.data.shapes.facts`). `generation.py` draws the splits and
`templates.py` writes their captions.
"""

import dataclasses

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")
SPLITS = ("train", "val", "test", "compositional")

# Far apart in RGB so that a nearest-colour lookup can never confuse two.
COLOR_RGB = (
  ("red", (220, 40, 40)),
  ("green", (40, 200, 60)),
  ("blue", (50, 90, 230)),
  ("yellow", (235, 220, 50)),
  ("purple", (160, 60, 200)),
)

# Surface forms of each relation; captions and the fact checker share them.
RELATION_PHRASES = (
  ("left", ("to the left of", "left of")),
  ("right", ("to the right of", "right of")),
  ("above", ("above", "over")),
  ("below", ("below", "under")),
)

DEFAULT_HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"))

GRID = 3


@dataclasses.dataclass(frozen=True)
class ShapeObject:
  """One object of a scene.

  Attributes:
    shape: One of SHAPES.
    color: One of COLORS.
    size: One of SIZES.
    row: Grid row, 0 at the top.
    col: Grid column, 0 at the left.
    bbox: Tight pixel box of the drawn object as (x_min, y_min, x_max,
      y_max), half-open: pixels satisfy x_min <= x < x_max and
      y_min <= y < y_max, so `image[y_min:y_max, x_min:x_max]` crops it.
  """

  shape: str
  color: str
  size: str
  row: int
  col: int
  bbox: tuple[int, int, int, int]


def relation_holds(a: ShapeObject, b: ShapeObject, relation: str) -> bool:
  """Returns whether `a` stands in `relation` to `b` (on grid cells).

  Args:
    a: Subject object.
    b: Reference object.
    relation: One of RELATIONS.

  Raises:
    ValueError: If the relation is unknown.
  """
  if relation == "left":
    return a.col < b.col
  if relation == "right":
    return a.col > b.col
  if relation == "above":
    return a.row < b.row
  if relation == "below":
    return a.row > b.row
  raise ValueError(f"Unknown relation {relation!r}; expected one of {RELATIONS}.")


def true_relations(a: ShapeObject, b: ShapeObject) -> list[str]:
  """Returns every relation in RELATIONS that holds from `a` to `b`."""
  return [r for r in RELATIONS if relation_holds(a, b, r)]


def mention_text(obj: ShapeObject) -> str:
  """Returns the "size colour shape" words that name an object."""
  return f"{obj.size} {obj.color} {obj.shape}"
