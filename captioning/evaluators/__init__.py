"""Evaluators, chosen by name from `config.eval.evaluators`.

An evaluator is built once with the split it scores and offers `run(model) -> dict[str, float]`.
Modules are imported on first use, so the pure-Python scorers (`facts`, `coco_metrics`) load
without TensorFlow.
"""

import importlib

_EVALUATORS = {
  "captions": ("captioning.evaluators.captions", "CaptionEvaluator"),
  "perplexity": ("captioning.evaluators.perplexity", "PerplexityEvaluator"),
  "relations": ("captioning.evaluators.relations", "RelationEvaluator"),
}


def create(name, **kwargs):
  """Builds the evaluator called `name` with the keyword arguments it needs."""
  if name not in _EVALUATORS:
    raise ValueError(f"Unknown evaluator {name!r} in config.eval.evaluators; available: {names()}")
  module, cls = _EVALUATORS[name]
  return getattr(importlib.import_module(module), cls)(**kwargs)


def names():
  return sorted(_EVALUATORS)
