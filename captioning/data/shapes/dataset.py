"""The `shapes` dataset (`config.data.name = "shapes"`): generated scenes with ground truth.

Beyond images and captions, every image keeps its scene (the objects, their attributes and
grid cells). That is what only this dataset has: fact accuracy on generated captions
(`facts.py`), the teacher-forced relation probe (`relations.py`, the `relations` evaluator),
the `compositional` split of held-out colour-shape pairs, and curricula by number of objects.
"""

import dataclasses

import numpy as np

from captioning.data import datasets
from captioning.data import images
from captioning.data.shapes import facts
from captioning.data.shapes import generation
from captioning.data.shapes import scenes


@dataclasses.dataclass(frozen=True)
class ShapesSplit(datasets.CaptionSplit):
  """A CaptionSplit whose images keep their scenes.

  Attributes:
    scenes: N tuples of `scenes.ShapeObject`, the objects of each image.
  """

  PER_IMAGE = (*datasets.CaptionSplit.PER_IMAGE, "scenes")

  scenes: list

  def scene_by_id(self):
    return {int(i): s for i, s in zip(self.image_ids, self.scenes)}

  def score_captions(self, predictions):
    """Fact accuracy of generated captions, overall and by number of objects."""
    return facts.fact_accuracy(predictions, self.scene_by_id())

  def caption_verdicts(self, predictions):
    """Each caption's fact verdict: correct (1 or 0) and, if wrong, what is wrong."""
    scenes_by_id = self.scene_by_id()
    verdicts = {}
    for image_id, caption in predictions.items():
      correct, reason = facts.check_caption(caption, scenes_by_id[image_id])
      verdicts[image_id] = {"fact_correct": int(correct), "fact_error": "" if correct else reason}
    return verdicts


class ShapesDataset(datasets.Dataset):
  """Procedural scenes of one to three shapes with templated captions (`generation.py`).

  Args:
    image_size: image side in pixels (at least 32).
    seed: the experiment seed; every split is a pure function of it.
    num_train, num_val, num_test, num_compositional: images per split.
    min_objects, max_objects: objects per scene, in [1, 3].
    held_out_pairs: (colour, shape) pairs that only the compositional split shows.
  """

  SPLITS = scenes.SPLITS
  EVALUATORS = ("perplexity", "captions", "relations")

  def __init__(
    self,
    *,
    image_size,
    seed,
    num_train,
    num_val,
    num_test,
    num_compositional,
    min_objects=1,
    max_objects=3,
    held_out_pairs=scenes.DEFAULT_HELD_OUT,
  ):
    super().__init__(image_size=image_size, seed=seed)
    self.sizes = {
      "train": num_train,
      "val": num_val,
      "test": num_test,
      "compositional": num_compositional,
    }
    for split, size in self.sizes.items():
      if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"num_{split} must be a positive integer, got {size!r}")
    self.min_objects, self.max_objects = min_objects, max_objects
    self.held_out_pairs = tuple(tuple(p) for p in held_out_pairs)
    for split in self.SPLITS:
      generation.check_arguments(
        split,
        self.sizes[split],
        self.image_size,
        min_objects,
        max_objects,
        self.held_out_pairs,
        5,
      )

  def load(self, name):
    generated = generation.generate_split(
      name,
      self.sizes[name],
      seed=self.seed,
      image_size=self.image_size,
      min_objects=self.min_objects,
      max_objects=self.max_objects,
      held_out_pairs=self.held_out_pairs,
    )
    return ShapesSplit(
      name,
      images.ArrayImages(generated.images),
      generated.image_ids.astype(np.int64),
      generated.captions,
      list(generated.scenes),
    )

  def curriculum_pairs(self, split, words, *, min_words, max_words, min_objects=0, max_objects=0):
    """The caption-length curriculum, and when `max_objects` > 0 only scenes of `min_objects`
    to `max_objects` objects (on `shapes`, 2-object scenes state exactly one relation)."""
    if not (0 <= min_objects <= max_objects or max_objects == 0 == min_objects):
      raise ValueError(
        "min_objects and max_objects must satisfy 0 <= min <= max (max 0: any number), got "
        f"{min_objects} and {max_objects}"
      )
    chosen = super().curriculum_pairs(split, words, min_words=min_words, max_words=max_words)
    if max_objects:
      objects = np.array([len(scene) for scene in split.scenes])[:, np.newaxis]  # [N, 1]
      chosen &= (objects >= min_objects) & (objects <= max_objects)
    return chosen
