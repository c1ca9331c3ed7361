"""Generates the splits of the embedded `shapes` dataset (scenes.py describes its world).

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

from captioning.data.shapes import scenes
from captioning.data.shapes import templates

# Side of an object's bounding square as a fraction of a grid cell.
SIZE_FRACTION = (("small", 0.45), ("large", 0.85))

MAX_JITTER = 3
# Hash buckets out of 100 per split; compositional needs none (see module doc).
SPLIT_BUCKETS = (("train", 0, 80), ("val", 80, 90), ("test", 90, 100))
# image_ids are split_index * ID_STRIDE + i, which keeps them unique across splits.
ID_STRIDE = 10_000_000
# Attempts at drawing a scene not yet in the split before accepting a repeat.
_UNIQUE_TRIES = 50
# A split whose bucket rejects this many candidates in a row is unsatisfiable.
_MAX_REJECTIONS = 100_000


@dataclasses.dataclass(frozen=True)
class ShapesSplit:
  """A generated split.

  Attributes:
    images: uint8 array [N, S, S, 3].
    image_ids: int64 array [N], unique across all splits.
    captions: N lists of reference captions.
    scenes: N tuples of scenes.ShapeObject, sorted by (row, col).
  """

  images: np.ndarray
  image_ids: np.ndarray
  captions: list[list[str]]
  scenes: list[tuple[scenes.ShapeObject, ...]]


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
    bounds = [(k * image_size) // scenes.GRID for k in range(scenes.GRID + 1)]
    self.cell_start = tuple(bounds[:-1])
    self.cell_width = tuple(b - a for a, b in itertools.pairwise(bounds))
    min_cell = min(self.cell_width)
    cell = image_size / scenes.GRID
    self.side, self.jitter = {}, {}
    for size, frac in SIZE_FRACTION:
      side = max(3, round(frac * cell))
      self.side[size] = side
      # Jitter stays inside the narrowest cell so objects never cross
      # into a neighbour cell, which keeps relations unambiguous.
      self.jitter[size] = max(0, min(MAX_JITTER, (min_cell - side) // 2))
    self.masks, self.mask_bounds = {}, {}
    for shape in scenes.SHAPES:
      for size in scenes.SIZES:
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
  if split not in scenes.SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {scenes.SPLITS}.")
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
  if not 1 <= min_objects <= scenes.GRID or not 1 <= max_objects <= scenes.GRID:
    raise ValueError(
      f"min_objects and max_objects must be in [1, {scenes.GRID}], "
      f"got {min_objects} and {max_objects}."
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
    if color not in scenes.COLORS:
      raise ValueError(f"Held-out pair {pair!r} has unknown colour {color!r}.")
    if shape not in scenes.SHAPES:
      raise ValueError(f"Held-out pair {pair!r} has unknown shape {shape!r}.")
    if (color, shape) not in held:
      held.append((color, shape))
  num_allowed = len(scenes.COLORS) * len(scenes.SHAPES) - len(held)
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
    self.all_pairs = tuple((c, s) for c in scenes.COLORS for s in scenes.SHAPES)
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
    cells = sorted(_distinct(scenes.GRID * scenes.GRID, vals[n : 2 * n]))
    scene = []
    for k, ((color, shape), cell) in enumerate(zip(pairs, cells)):
      size = scenes.SIZES[int(vals[2 * n + k] * len(scenes.SIZES))]
      span = 2 * self.geo.jitter[size] + 1
      jx = int(vals[3 * n + k] * span) - span // 2
      jy = int(vals[4 * n + k] * span) - span // 2
      scene.append((shape, color, size, cell // scenes.GRID, cell % scenes.GRID, jx, jy))
    return tuple(scene)

  def _single(self) -> tuple:
    # One-object scenes are few enough to enumerate, so drawing them from a
    # shuffled pool avoids repeats until the split has used them all.
    if self.single_pool is None:
      pairs = self.held_out if self.split == "compositional" else self.allowed
      pool = []
      for (color, shape), size, cell in itertools.product(
        pairs, scenes.SIZES, range(scenes.GRID * scenes.GRID)
      ):
        j = self.geo.jitter[size]
        for jx, jy in itertools.product(range(-j, j + 1), repeat=2):
          spec = ((shape, color, size, cell // scenes.GRID, cell % scenes.GRID, jx, jy),)
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


def _place(spec: tuple, geo: _Geometry) -> tuple[scenes.ShapeObject, ...]:
  """Turns a scene spec into its objects, sorted by cell."""
  objects = []
  for shape, color, size, row, col, jx, jy in sorted(spec, key=lambda o: o[3:5]):
    x, y = geo.origin(size, row, col, jx, jy)
    mx0, my0, mx1, my1 = geo.mask_bounds[shape, size]
    objects.append(
      scenes.ShapeObject(shape, color, size, row, col, (x + mx0, y + my0, x + mx1, y + my1))
    )
  return tuple(objects)


def _render(
  all_scenes: Sequence[tuple[scenes.ShapeObject, ...]], geo: _Geometry, images: np.ndarray
) -> None:
  """Draws all scenes into `images` at once, one fancy-index per mask."""
  rgb = dict(scenes.COLOR_RGB)
  size = geo.image_size
  groups = {}
  for i, scene in enumerate(all_scenes):
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


def generate_split(
  split: str,
  num_examples: int,
  *,
  seed: int = 0,
  image_size: int = 64,
  min_objects: int = 1,
  max_objects: int = 3,
  held_out_pairs: Iterable[tuple[str, str]] = scenes.DEFAULT_HELD_OUT,
  captions_per_image: int = 5,
) -> ShapesSplit:
  """Generates one split of the shapes dataset, deterministically from `seed`.

  Args:
    split: One of scenes.SPLITS.
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
  split_index = scenes.SPLITS.index(split)
  rng = np.random.default_rng([seed, split_index])
  uniforms = _Uniforms(rng)
  geo = _Geometry(int(image_size))
  sampler = _SceneSampler(split, geo, rng, uniforms, min_objects, max_objects, held_out)
  all_scenes = []
  captions = []
  for _ in range(num_examples):
    scene = _place(sampler.sample(), geo)
    all_scenes.append(scene)
    captions.append(templates.make_captions(scene, captions_per_image, uniforms))
  images = np.zeros((num_examples, image_size, image_size, 3), dtype=np.uint8)
  _render(all_scenes, geo, images)
  image_ids = split_index * ID_STRIDE + np.arange(num_examples, dtype=np.int64)
  return ShapesSplit(images=images, image_ids=image_ids, captions=captions, scenes=all_scenes)
