"""One way to build a training run: data, tokenizer, model, optimizer, checkpoint, stream, step.

`TrainingRun.create(config, workdir)` is what `train.train_and_evaluate` trains and what
`benchmarks/train_throughput.py` times, so the benchmark measures exactly what training does.
Nothing is written to the workdir until every part is built, so a bad config value leaves an
existing workdir as it was.
"""

import dataclasses

import keras
import tensorflow as tf

from captioning import config_checks
from captioning import evaluators
from captioning import experiment
from captioning import features
from captioning import losses
from captioning import registry
from captioning.data import datasets
from captioning.data import pipeline


def create_strategy(name):
  """Returns the tf.distribute strategy named by `config.train.strategy`."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(
    f"Unknown config.train.strategy {name!r}; expected default | mirrored | multi_worker_mirrored"
  )


def make_train_step(model, optimizers, loss_fn, strategy, pad_id, train_config):
  """Builds the distributed train step: (batch dict, tune_backbone) -> dict of scalar metrics.

  Args:
    model: the Captioner.
    optimizers: `experiment.build_optimizers`' result, {name: (optimizer, variables)}.
    loss_fn: a `losses.CaptionLoss`.
    strategy: the tf.distribute strategy the model was built under.
    pad_id: the tokenizer's padding id.
    train_config: the `train` section (grad_clip_norm, jit_compile).

  Returns:
    `train_step(batch, tune_backbone=False)`: with `tune_backbone` (a Python bool: one trace
    each), the backbone optimizer's variables get gradients and updates too.
  """
  num_replicas = strategy.num_replicas_in_sync

  def loss_and_grads(batch, variables):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]  # [B, T] each
    mask = tf.not_equal(targets, pad_id)
    with tf.GradientTape() as tape:
      out = model({**batch, "tokens": inputs}, training=True)  # the model takes its image keys
      loss, metrics = loss_fn(targets, out, mask)
      # Gradients are summed over replicas when applied, so each replica's loss is scaled down.
      scaled = loss / num_replicas
    grads = tape.gradient(scaled, variables)
    grads, grad_norm = tf.clip_by_global_norm(grads, train_config.grad_clip_norm)
    metrics["grad_norm"] = grad_norm
    metrics["teacher_forced_token_accuracy"] = losses.token_accuracy(targets, out["logits"], mask)
    if "gate" in out:  # decoders with a gating scalar report its mean
      metrics["mean_gate"] = tf.reduce_mean(tf.boolean_mask(tf.cast(out["gate"], tf.float32), mask))
    return grads, metrics

  def phase(tune_backbone):
    """(the optimizers that step, the loss-and-gradients function over their variables)."""
    active = [
      (optimizer, variables)
      for name, (optimizer, variables) in optimizers.items()
      if tune_backbone or name != "backbone_optimizer"
    ]
    variables = [v for _, group in active for v in group]
    compiled = tf.function(
      lambda batch: loss_and_grads(batch, variables), jit_compile=bool(train_config.jit_compile)
    )
    return active, compiled

  phases = {False: phase(False), True: phase(True)}

  def replica_step(batch, tune_backbone):
    active, compiled = phases[tune_backbone]
    grads, metrics = compiled(batch)
    start = 0
    for optimizer, variables in active:
      optimizer.apply_gradients(zip(grads[start : start + len(variables)], variables))
      start += len(variables)
    return metrics

  @tf.function
  def train_step(batch, tune_backbone=False):
    per_replica = strategy.run(replica_step, args=(batch, tune_backbone))
    return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

  return train_step


@dataclasses.dataclass
class TrainingRun:
  """Everything a training run is made of, built by `create`.

  Attributes:
    config: the validated config.
    workdir: where the run saves and resumes.
    dataset: the `datasets.Dataset` of `config.data`.
    train_split: its training split.
    tokenizer: the workdir's tokenizer.
    strategy: the tf.distribute strategy.
    model: the Captioner (its output bias starts from the training captions' word prior).
    optimizers: {name: (optimizer, variables)} (`experiment.build_optimizers`).
    step: the host step counter, an int64 variable.
    manager: the `tf.train.CheckpointManager` of model, optimizers and step.
    stream: the `pipeline.TrainStream` (a pure function of seed and step).
    train_step: the compiled distributed step, batch dict -> dict of scalars.
    eval_split: the first `config.eval.num_examples` images of the dataset's evaluation split.
    evaluators: {name: evaluator} of `config.eval.evaluators`, built on `eval_split`.
  """

  config: object
  workdir: str
  dataset: datasets.Dataset
  train_split: datasets.CaptionSplit
  tokenizer: object
  strategy: object
  model: keras.Model
  optimizers: dict
  step: tf.Variable
  manager: tf.train.CheckpointManager
  stream: pipeline.TrainStream
  train_step: object
  eval_split: datasets.CaptionSplit
  evaluators: dict

  @classmethod
  def create(cls, config, workdir):
    """Builds the run and restores the workdir's latest checkpoint, if any.

    Raises:
      ValueError: a bad config value, or a workdir trained with another data or model config.
    """
    config_checks.validate(config)
    experiment.check_workdir(config, workdir)
    keras.utils.set_random_seed(config.seed)
    dataset = features.open_dataset(config)
    train_split = dataset.split(dataset.train_split)
    tokenizer = experiment.load_or_build_tokenizer(workdir, train_split, config.data)
    tokens = pipeline.encode_captions(train_split, tokenizer, config.data.max_caption_length)
    curriculum = dict(config.curriculum)
    curriculum_steps = curriculum.pop("steps")
    words = (tokens != tokenizer.pad_id).sum(-1) - 2  # [N, K], without <start> and <end>
    curriculum_pairs = registry.call_with_section(
      dataset.curriculum_pairs, curriculum, "config.curriculum", split=train_split, words=words
    )
    stream = pipeline.TrainStream(
      train_split,
      tokens,
      config.train.batch_size,
      config.seed,
      length_multiple=config.data.bucket_length_multiple,
      curriculum_steps=curriculum_steps,
      curriculum_pairs=curriculum_pairs,
    )

    strategy = create_strategy(config.train.strategy)
    with strategy.scope():
      prior = tokenizer.word_counts_prior(c for caps in train_split.captions for c in caps)
      model = experiment.build_model(config, tokenizer.vocab_size, output_bias=prior)
      features.load_backbone_weights(model, config)
      optimizers = experiment.build_optimizers(config, model)
    loss_fn = registry.call_with_section(losses.CaptionLoss, config.loss, "config.loss")
    eval_split = dataset.split(dataset.eval_split).take(config.eval.num_examples)
    evals = evaluators.create_for_run(config, eval_split, tokenizer)
    # The step counter lives on the host, outside the strategy: it is not a replicated variable.
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = experiment.training_checkpoint(model, optimizers, step)
    manager = tf.train.CheckpointManager(
      checkpoint,
      experiment.checkpoint_dir(workdir),
      max_to_keep=config.train.max_checkpoints,
      step_counter=step,
    )
    if manager.restore_or_initialize() is None and config.train.init_from:
      experiment.init_weights_from(model, config.train.init_from)
    # Everything is built: only now is the workdir written.
    experiment.save_workdir(config, tokenizer, workdir, int(step))
    train_step = make_train_step(
      model, optimizers, loss_fn, strategy, tokenizer.pad_id, config.train
    )
    return cls(
      config=config,
      workdir=workdir,
      dataset=dataset,
      train_split=train_split,
      tokenizer=tokenizer,
      strategy=strategy,
      model=model,
      optimizers=optimizers,
      step=step,
      manager=manager,
      stream=stream,
      train_step=train_step,
      eval_split=eval_split,
      evaluators=evals,
    )

  @property
  def optimizer(self):
    """The captioner's optimizer (its learning rate is the one logged)."""
    return self.optimizers["optimizer"][0]

  def tune_backbone(self, step):
    """Whether step `step` also trains the backbone's top layers."""
    return (
      "backbone_optimizer" in self.optimizers and step >= self.config.train.fine_tune.start_step
    )

  def run_step(self, batch):
    """One train step at the current step counter: dict of scalar metrics."""
    return self.train_step(batch, self.tune_backbone(int(self.step)))

  def batches(self):
    """The distributed batches from the current step on."""
    return iter(self.strategy.experimental_distribute_dataset(self.stream.dataset(int(self.step))))
