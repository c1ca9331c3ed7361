"""Evaluators, chosen by name: `config.eval.evaluators = {name: its own settings}`.

An evaluator is built once with the split it scores and offers `run(model) -> dict[str, float]`
(see `base.Evaluator`). Each is built with exactly the arguments its constructor names: its own
config section, plus what it asks for from the run's context (`CONTEXT`). Entries are imported on
first use, so the pure-Python scorers (`coco_metrics`, `data.shapes.facts`) load without
TensorFlow.

Adding an evaluator: its module (an `Evaluator` subclass), one line in `EVALUATORS`, its name in
the `EVALUATORS` of the datasets it makes sense for, and a config section.
"""

from captioning import registry

EVALUATORS = registry.Registry(
  "config.eval.evaluators",
  {
    "captions": "captioning.evaluators.captions:CaptionEvaluator",
    "perplexity": "captioning.evaluators.perplexity:PerplexityEvaluator",
    "relations": "captioning.data.shapes.relations:RelationEvaluator",
  },
)

# What the run offers every evaluator; each constructor takes the ones it names.
CONTEXT = ("split", "tokenizer", "max_caption_length", "decode", "batch_size", "jit_compile")


def check(evaluators_config, dataset_cls):
  """Checks `config.eval.evaluators` against the registry and the dataset.

  Raises:
    ValueError: for an unknown evaluator, one that does not apply to the dataset, or a
      setting its constructor does not take.
  """
  for name, section in evaluators_config.items():
    cls = EVALUATORS.get(name)
    if name not in dataset_cls.EVALUATORS:
      raise ValueError(
        f"Bad config: config.eval.evaluators.{name} does not apply to the dataset "
        f"({dataset_cls.__name__}); it offers {list(dataset_cls.EVALUATORS)}."
      )
    registry.check_section(
      cls, section, f"config.eval.evaluators.{name}", provided=_asked(cls, CONTEXT)
    )


def _asked(cls, context_names):
  return [a for a in registry.arguments(cls) if a in context_names]


def create_all(evaluators_config, **context):
  """Builds every evaluator `config.eval.evaluators` names, {name: evaluator}.

  Args:
    evaluators_config: {name: settings}, the `eval.evaluators` section.
    **context: the values of `CONTEXT` for this run.
  """
  out = {}
  for name, section in evaluators_config.items():
    cls = EVALUATORS.get(name)
    asked = {a: context[a] for a in _asked(cls, context)}
    out[name] = registry.call_with_section(cls, section, f"config.eval.evaluators.{name}", **asked)
  return out


def create_for_run(config, split, tokenizer, batch_size=None):
  """Builds the evaluators of `config.eval.evaluators` on `split`, with the run's context
  taken from the config (`batch_size` instead of `config.eval.batch_size` when given)."""
  return create_all(
    config.eval.evaluators,
    split=split,
    tokenizer=tokenizer,
    max_caption_length=config.data.max_caption_length,
    decode=config.decode,
    batch_size=batch_size or config.eval.batch_size,
    jit_compile=config.train.jit_compile,
  )


def names():
  return EVALUATORS.names()
