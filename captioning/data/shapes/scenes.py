"""The embedded "shapes" captioning dataset, generated procedurally.

Each image is a black square holding one to three coloured shapes placed in
distinct cells of a 3x3 grid. Because objects never share a cell and spatial
relations are defined on cells, every relation between two objects is
unambiguous, and because no two objects of a scene share a (colour, shape)
pair, every mention of an object in a caption names exactly one object. That
makes the captions mechanically checkable (see
`captioning.data.shapes.facts`).

Splits are disjoint by construction: every scene has a stable hash of
everything that determines its pixels, and train/val/test each accept only the
scenes whose hash falls in their bucket. The "compositional" split holds the
scenes that contain at least one held-out (colour, shape) pair, which the other
splits never contain.
"""

from collections.abc import Iterable, Sequence
import dataclasses
import hashlib
import itertools

import numpy as np

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

# Side of an object's bounding square as a fraction of a grid cell.
SIZE_FRACTION = (("small", 0.45), ("large", 0.85))

# Surface forms of each relation; captions and the fact checker share them.
RELATION_PHRASES = (
  ("left", ("to the left of", "left of")),
  ("right", ("to the right of", "right of")),
  ("above", ("above", "over")),
  ("below", ("below", "under")),
)

DEFAULT_HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"))

GRID = 3
MAX_JITTER = 3
# Hash buckets out of 100 per split; compositional needs none (see module doc).
SPLIT_BUCKETS = (("train", 0, 80), ("val", 80, 90), ("test", 90, 100))
# image_ids are split_index * ID_STRIDE + i, which keeps them unique across splits.
ID_STRIDE = 10_000_000
# Attempts at drawing a scene not yet in the split before accepting a repeat.
_UNIQUE_TRIES = 50
# A split whose bucket rejects this many candidates in a row is unsatisfiable.
_MAX_REJECTIONS = 100_000

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


@dataclasses.dataclass(frozen=True)
class ShapesSplit:
  """A generated split.

  Attributes:
    images: uint8 array [N, S, S, 3].
    image_ids: int64 array [N], unique across all splits.
    captions: N lists of reference captions.
    scenes: N tuples of ShapeObject, sorted by (row, col).
  """

  images: np.ndarray
  image_ids: np.ndarray
  captions: list[list[str]]
  scenes: list[tuple[ShapeObject, ...]]


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


def scene_key(image_size: int, scene: Iterable[tuple]) -> str:
  """Returns a canonical string of everything that determines a scene's image.

  Args:
    image_size: Image side in pixels.
    scene: Tuples (shape, color, size, row, col, jitter_x, jitter_y) of
      str and int values, in any order.
  """
  # repr of tuples of str and int is stable across Python versions and
  # platforms, which the stable split assignment relies on.
  return f"{image_size}|{tuple(sorted(scene))!r}"


def scene_bucket(key: str) -> int:
  """Maps a scene key to a bucket in [0, 100) with a process-stable hash."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % 100


class _Geometry:
  """Pixel layout for one image size: cells, object masks and jitter ranges."""

  def __init__(self, image_size: int):
    self.image_size = image_size
    bounds = [(k * image_size) // GRID for k in range(GRID + 1)]
    self.cell_start = tuple(bounds[:-1])
    self.cell_width = tuple(b - a for a, b in itertools.pairwise(bounds))
    min_cell = min(self.cell_width)
    cell = image_size / GRID
    self.side, self.jitter = {}, {}
    for size, frac in SIZE_FRACTION:
      side = max(3, round(frac * cell))
      self.side[size] = side
      # Jitter stays inside the narrowest cell so objects never cross
      # into a neighbour cell, which keeps relations unambiguous.
      self.jitter[size] = max(0, min(MAX_JITTER, (min_cell - side) // 2))
    self.masks, self.mask_bounds = {}, {}
    for shape in SHAPES:
      for size in SIZES:
        mask = _shape_mask(shape, self.side[size])
        ys, xs = np.nonzero(mask)
        self.masks[shape, size] = mask
        self.mask_bounds[shape, size] = (
          int(xs.min()),
          int(ys.min()),
          int(xs.max()) + 1,
          int(ys.max()) + 1,
        )

  def origin(self, size: str, row: int, col: int, jx: int, jy: int) -> tuple[int, int]:
    """Top-left pixel (x, y) of an object's bounding square."""
    side = self.side[size]
    x = self.cell_start[col] + (self.cell_width[col] - side) // 2 + jx
    y = self.cell_start[row] + (self.cell_width[row] - side) // 2 + jy
    return x, y


def _shape_mask(shape: str, side: int) -> np.ndarray:
  """Boolean [side, side] mask of a shape filling its bounding square."""
  yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5
  centre = side / 2.0
  if shape == "circle":
    return (xx - centre) ** 2 + (yy - centre) ** 2 <= centre**2
  if shape == "square":
    return np.ones((side, side), dtype=bool)
  if shape == "triangle":
    # Apex at the top centre, base along the bottom edge.
    return np.abs(xx - centre) <= yy / 2.0
  raise ValueError(f"Unknown shape {shape!r}.")


def check_arguments(
  split, num_examples, image_size, min_objects, max_objects, held_out_pairs, captions_per_image
):
  """Checks the arguments of generate_split; returns held-out pairs as a tuple."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
  for name, value in (
    ("num_examples", num_examples),
    ("image_size", image_size),
    ("min_objects", min_objects),
    ("max_objects", max_objects),
    ("captions_per_image", captions_per_image),
  ):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{name} must be an integer, got {value!r}.")
  if not 1 <= num_examples < ID_STRIDE:
    raise ValueError(f"num_examples must be in [1, {ID_STRIDE}), got {num_examples}.")
  if image_size < 32:
    raise ValueError(f"image_size must be at least 32, got {image_size}.")
  if not 1 <= min_objects <= GRID or not 1 <= max_objects <= GRID:
    raise ValueError(
      f"min_objects and max_objects must be in [1, {GRID}], got {min_objects} and {max_objects}."
    )
  if min_objects > max_objects:
    raise ValueError(f"min_objects ({min_objects}) exceeds max_objects ({max_objects}).")
  if captions_per_image < 1:
    raise ValueError(f"captions_per_image must be at least 1, got {captions_per_image}.")
  held = []
  for pair in held_out_pairs:
    if isinstance(pair, str) or len(pair) != 2:
      raise ValueError(f"Held-out pair {pair!r} must be a (colour, shape) pair.")
    color, shape = pair
    if color not in COLORS:
      raise ValueError(f"Held-out pair {pair!r} has unknown colour {color!r}.")
    if shape not in SHAPES:
      raise ValueError(f"Held-out pair {pair!r} has unknown shape {shape!r}.")
    if (color, shape) not in held:
      held.append((color, shape))
  num_allowed = len(COLORS) * len(SHAPES) - len(held)
  if num_allowed < max_objects:
    raise ValueError(
      f"Held-out pairs leave {num_allowed} (colour, shape) pairs for "
      f"train/val/test, fewer than max_objects={max_objects}."
    )
  if split == "compositional" and not held:
    raise ValueError("The compositional split needs at least one held-out pair.")
  return tuple(held)


class _Uniforms:
  """Buffered uniforms from a numpy Generator.

  Scenes and captions need many tiny random choices; drawing them one at a
  time from the Generator dominates generation time, so they are drawn in
  blocks and consumed as Python floats.
  """

  def __init__(self, rng: np.random.Generator, block: int = 8192):
    self.rng = rng
    self.block = block
    self.values = []
    self.pos = 0

  def below(self, n: int) -> int:
    """Returns an integer in [0, n)."""
    return min(int(self.take(1)[0] * n), n - 1)

  def take(self, n: int) -> list[float]:
    """Returns n floats in [0, 1)."""
    if self.pos + n > len(self.values):
      self.values = self.values[self.pos :] + self.rng.random(self.block + n).tolist()
      self.pos = 0
    self.pos += n
    return self.values[self.pos - n : self.pos]

  def permutation(self, n: int) -> list[int]:
    """Returns a random permutation of range(n)."""
    keys = self.take(n)
    return sorted(range(n), key=keys.__getitem__)


def _distinct(n: int, vals: Sequence[float]) -> list[int]:
  """Maps len(vals) uniforms to that many distinct integers from [0, n)."""
  pool = list(range(n))
  for i, v in enumerate(vals):
    j = i + min(int(v * (n - i)), n - i - 1)
    pool[i], pool[j] = pool[j], pool[i]
  return pool[: len(vals)]


class _SceneSampler:
  """Draws scene specifications valid for one split."""

  def __init__(self, split, geometry, rng, uniforms, min_objects, max_objects, held_out):
    self.split = split
    self.geo = geometry
    self.rng = rng
    self.u = uniforms
    self.min_objects = min_objects
    self.max_objects = max_objects
    self.held_out = held_out
    self.all_pairs = tuple((c, s) for c in COLORS for s in SHAPES)
    self.allowed = tuple(p for p in self.all_pairs if p not in held_out)
    self.bucket = next(((lo, hi) for name, lo, hi in SPLIT_BUCKETS if name == split), None)
    self.seen = set()
    self.single_pool, self.single_order, self.single_pos = None, None, 0

  def _in_split(self, key: str) -> bool:
    return self.bucket is None or self.bucket[0] <= scene_bucket(key) < self.bucket[1]

  def _random_scene(self, n: int) -> tuple:
    # One block of uniforms per candidate: val/test reject about nine
    # candidates in ten, so this path is the generator's hot loop.
    vals = self.u.take(5 * n)
    if self.split == "compositional":
      first = self.held_out[min(int(vals[0] * len(self.held_out)), len(self.held_out) - 1)]
      rest = [p for p in self.all_pairs if p != first]
      pairs = [first] + [rest[i] for i in _distinct(len(rest), vals[1:n])]
    else:
      pairs = [self.allowed[i] for i in _distinct(len(self.allowed), vals[:n])]
    # Sorted cells keep specs in (row, col) order; the pairs are already
    # in random order, so this loses no randomness.
    cells = sorted(_distinct(GRID * GRID, vals[n : 2 * n]))
    scene = []
    for k, ((color, shape), cell) in enumerate(zip(pairs, cells)):
      size = SIZES[int(vals[2 * n + k] * len(SIZES))]
      span = 2 * self.geo.jitter[size] + 1
      jx = int(vals[3 * n + k] * span) - span // 2
      jy = int(vals[4 * n + k] * span) - span // 2
      scene.append((shape, color, size, cell // GRID, cell % GRID, jx, jy))
    return tuple(scene)

  def _single(self) -> tuple:
    # One-object scenes are few enough to enumerate, so drawing them from a
    # shuffled pool avoids repeats until the split has used them all.
    if self.single_pool is None:
      pairs = self.held_out if self.split == "compositional" else self.allowed
      pool = []
      for (color, shape), size, cell in itertools.product(pairs, SIZES, range(GRID * GRID)):
        j = self.geo.jitter[size]
        for jx, jy in itertools.product(range(-j, j + 1), repeat=2):
          spec = ((shape, color, size, cell // GRID, cell % GRID, jx, jy),)
          if self._in_split(scene_key(self.geo.image_size, spec)):
            pool.append(spec)
      if not pool:
        raise ValueError(f"No one-object scenes fall in split {self.split!r}.")
      self.single_pool = pool
      self.single_pos = len(pool)
    if self.single_pos == len(self.single_pool):
      self.single_order = self.rng.permutation(len(self.single_pool)).tolist()
      self.single_pos = 0
    spec = self.single_pool[self.single_order[self.single_pos]]
    self.single_pos += 1
    return spec

  def sample(self) -> tuple:
    """Returns the next scene spec: tuples (shape, color, size, row, col, jx, jy)."""
    n = self.min_objects + self.u.below(self.max_objects - self.min_objects + 1)
    if n == 1:
      return self._single()
    rejections = 0
    tries = 0
    while True:
      spec = self._random_scene(n)
      key = scene_key(self.geo.image_size, spec)
      if not self._in_split(key):
        rejections += 1
        if rejections > _MAX_REJECTIONS:
          raise RuntimeError(f"Cannot find scenes for split {self.split!r}.")
        continue
      tries += 1
      # Multi-object scene spaces are huge, so a repeat here is a fluke
      # worth redrawing; the cap only guards pathological configs.
      if key not in self.seen or tries >= _UNIQUE_TRIES:
        self.seen.add(key)
        return spec


def _place(spec: tuple, geo: _Geometry) -> tuple[ShapeObject, ...]:
  """Turns a scene spec into its objects, sorted by cell."""
  objects = []
  for shape, color, size, row, col, jx, jy in sorted(spec, key=lambda o: o[3:5]):
    x, y = geo.origin(size, row, col, jx, jy)
    mx0, my0, mx1, my1 = geo.mask_bounds[shape, size]
    objects.append(ShapeObject(shape, color, size, row, col, (x + mx0, y + my0, x + mx1, y + my1)))
  return tuple(objects)


def _render(scenes: Sequence[tuple[ShapeObject, ...]], geo: _Geometry, images: np.ndarray) -> None:
  """Draws all scenes into `images` at once, one fancy-index per mask."""
  rgb = dict(COLOR_RGB)
  size = geo.image_size
  groups = {}
  for i, scene in enumerate(scenes):
    for obj in scene:
      mx0, my0 = geo.mask_bounds[obj.shape, obj.size][:2]
      # Flat pixel index of the mask's top-left corner in the whole batch.
      base = (i * size + obj.bbox[1] - my0) * size + obj.bbox[0] - mx0
      groups.setdefault((obj.shape, obj.size), []).append((base,) + rgb[obj.color])
  pixels = images.reshape(-1, 3)
  for (shape, obj_size), rows in groups.items():
    ys, xs = np.nonzero(geo.masks[shape, obj_size])
    table = np.asarray(rows, dtype=np.int64)
    flat = table[:, :1] + (ys * size + xs)[None, :]
    colors = np.repeat(table[:, 1:].astype(np.uint8), len(ys), axis=0)
    pixels[flat.ravel()] = colors


def mention_text(obj: ShapeObject) -> str:
  """Returns the "size colour shape" words that name an object."""
  return f"{obj.size} {obj.color} {obj.shape}"


def make_captions(
  scene: Sequence[ShapeObject], num_captions: int, rng: np.random.Generator | _Uniforms
) -> list[str]:
  """Returns `num_captions` true captions of a scene from varied templates.

  Args:
    scene: One to three objects in distinct cells.
    num_captions: How many captions to produce.
    rng: Source of randomness.
  """
  u = rng if isinstance(rng, _Uniforms) else _Uniforms(rng, block=64)
  phrases_of = dict(RELATION_PHRASES)
  # Every relation has the same number of phrases, so a uniform pick over all
  # phrases of the true relations is a uniform pick of relation, then phrase.
  # Diagonal pairs have two true relations and either may be used.
  pair_phrases = {
    (i, j): tuple(p for r in true_relations(a, b) for p in phrases_of[r])
    for i, a in enumerate(scene)
    for j, b in enumerate(scene)
    if i != j
  }
  names = [mention_text(obj) for obj in scene]
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


def generate_split(
  split: str,
  num_examples: int,
  *,
  seed: int = 0,
  image_size: int = 64,
  min_objects: int = 1,
  max_objects: int = 3,
  held_out_pairs: Iterable[tuple[str, str]] = DEFAULT_HELD_OUT,
  captions_per_image: int = 5,
) -> ShapesSplit:
  """Generates one split of the shapes dataset, deterministically from `seed`.

  Args:
    split: One of SPLITS.
    num_examples: Number of images.
    seed: Seed; the same arguments always give byte-identical output.
    image_size: Image side in pixels, at least 32.
    min_objects: Fewest objects per image, in [1, 3].
    max_objects: Most objects per image, in [min_objects, 3].
    held_out_pairs: (colour, shape) pairs that only the compositional split
      contains.
    captions_per_image: Reference captions per image.

  Returns:
    The generated ShapesSplit.

  Raises:
    ValueError: If an argument is invalid.
  """
  held_out = check_arguments(
    split, num_examples, image_size, min_objects, max_objects, held_out_pairs, captions_per_image
  )
  split_index = SPLITS.index(split)
  rng = np.random.default_rng([seed, split_index])
  uniforms = _Uniforms(rng)
  geo = _Geometry(int(image_size))
  sampler = _SceneSampler(split, geo, rng, uniforms, min_objects, max_objects, held_out)
  scenes = []
  captions = []
  for _ in range(num_examples):
    scene = _place(sampler.sample(), geo)
    scenes.append(scene)
    captions.append(make_captions(scene, captions_per_image, uniforms))
  images = np.zeros((num_examples, image_size, image_size, 3), dtype=np.uint8)
  _render(scenes, geo, images)
  image_ids = split_index * ID_STRIDE + np.arange(num_examples, dtype=np.int64)
  return ShapesSplit(images=images, image_ids=image_ids, captions=captions, scenes=scenes)
