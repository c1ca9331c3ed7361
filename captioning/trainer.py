"""One way to build a training run: data, tokenizer, model, optimizer, checkpoint, stream, step.

`TrainingRun.create(config, workdir)` is what `train.train_and_evaluate` trains and what
`benchmarks/train_throughput.py` times, so the benchmark measures exactly what training does.
Nothing is written to the workdir until every part is built, so a bad config value leaves an
existing workdir as it was.
"""

import dataclasses
import functools
import tempfile

from absl import logging
import keras
import tensorflow as tf

from captioning import checkpoints
from captioning import config_checks
from captioning import evaluators
from captioning import experiment
from captioning import features
from captioning import losses
from captioning import registry
from captioning import train_step as train_step_lib
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


def worker_role(strategy):
  """(whether this process is the chief, its task id) under `strategy`.

  Under MultiWorkerMirroredStrategy the chief is the "chief" task, or worker 0 where the
  cluster has no chief (as TensorFlow's multi-worker guide defines it); alone, a process is
  its own chief.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True, 0
  task_type, task_id = resolver.task_type, resolver.task_id or 0
  chief = task_type in (None, "chief") or (
    task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
  )
  return chief, task_id


def num_workers(strategy):
  """How many processes train together under `strategy` (1 unless multi-worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, len(spec.get("chief", ())) + len(spec.get("worker", ())))


def _write_dir(workdir, chief, task_id):
  """Where this process writes: the workdir for the chief; for other workers a temporary folder
  (TensorFlow needs every worker to save, so theirs save there, and it is deleted at the end)."""
  if chief:
    return workdir
  return tempfile.mkdtemp(prefix=f"captioning-worker{task_id}-")


@dataclasses.dataclass
class TrainingRun:
  """Everything a training run is made of, built by `create`.

  Attributes:
    config: the validated config.
    workdir: where the run saves and resumes.
    chief: whether this process writes the workdir (one process, or the multi-worker chief).
    write_dir: where this process writes checkpoints, summaries and the final model: the
      workdir, or for a worker that is not the chief a temporary folder.
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
    consecutive_skips: updates skipped in a row so far (non-finite loss or gradient).
    compilations: traces of the train step so far (XLA compilations with jit_compile).
  """

  config: object
  workdir: str
  chief: bool
  write_dir: str
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
  consecutive_skips: int = 0
  compilations: int = 0
  _stop_reduce: object = None

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
    parts = strategy.num_replicas_in_sync * config.train.grad_accumulation_steps
    if config.train.batch_size % parts:
      raise ValueError(
        f"Bad config: train.batch_size {config.train.batch_size} (the global batch) must be a "
        f"multiple of {strategy.num_replicas_in_sync} replicas x "
        f"train.grad_accumulation_steps {config.train.grad_accumulation_steps}"
      )
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
    chief, task_id = worker_role(strategy)
    write_dir = _write_dir(workdir, chief, task_id)
    manager = tf.train.CheckpointManager(
      checkpoint,
      experiment.checkpoint_dir(write_dir),
      max_to_keep=config.train.max_checkpoints,
      step_counter=step,
    )
    # Every worker resumes from the chief's latest checkpoint (the workdir is shared).
    latest = tf.train.latest_checkpoint(experiment.checkpoint_dir(workdir))
    if latest:
      checkpoint.restore(latest)
    elif config.train.init_from:
      experiment.init_weights_from(model, config.train.init_from)
    # Everything is built: only now is the workdir written (by the chief alone).
    if chief:
      experiment.save_workdir(config, tokenizer, workdir, int(step))
    train_step = train_step_lib.make_train_step(
      model, optimizers, loss_fn, strategy, tokenizer.pad_id, config.train, config.seed, step
    )
    return cls(
      config=config,
      workdir=workdir,
      chief=chief,
      write_dir=write_dir,
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

  @functools.cached_property
  def workers(self):
    """How many processes train together (1 unless multi-worker)."""
    return num_workers(self.strategy)

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
    """One train step at the current step counter: dict of scalar metrics.

    Raises:
      FloatingPointError: `config.train.max_consecutive_skips` updates in a row were skipped
        for a non-finite loss or gradient (the weights are those of the last good update).
    """
    metrics = self.train_step(batch, self.tune_backbone(int(self.step)))
    compilations = self.train_step.compilations()
    if compilations != self.compilations:
      logging.info(
        "step %d: train step traced%s for a new batch shape (%d so far; one per caption-length "
        "bucket)",
        int(self.step),
        " and compiled with XLA" if self.config.train.jit_compile else "",
        compilations,
      )
      self.compilations = compilations
    if float(metrics["skipped_nonfinite"]):
      self.consecutive_skips += 1
      if self.consecutive_skips >= self.config.train.max_consecutive_skips:
        raise FloatingPointError(
          f"{self.consecutive_skips} updates in a row skipped for a non-finite loss or gradient "
          f"(step {int(self.step)}); stopping. The weights are those of the last finite update "
          f"and the last checkpoint is {self.manager.latest_checkpoint}. Try a lower "
          "config.train.learning_rate or config.train.grad_clip_norm."
        )
    else:
      self.consecutive_skips = 0
    return metrics

  def agreed_stop(self, signum):
    """The stop signal every worker acts on after this step, given this process's (or None).

    Alone, that is `signum`. Under MultiWorkerMirroredStrategy a scheduler may signal one
    worker only, and all must stop after the same step (each step and each save is collective),
    so the signals are all-reduced at every step: any worker's SIGTERM stops all (SIGTERM wins
    over SIGINT where both came).
    """
    if self.workers == 1:
      return signum
    if self._stop_reduce is None:
      strategy = self.strategy

      @tf.function
      def reduce(received):
        per_replica = strategy.run(tf.identity, args=(received,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

      self._stop_reduce = reduce
    received = [int(signum == s) for s in checkpoints.STOP_SIGNALS]
    counts = self._stop_reduce(tf.constant(received, tf.int32)).numpy()
    return next((s for s, count in zip(checkpoints.STOP_SIGNALS, counts) if count), None)

  def batches(self):
    """The distributed batches from the current step on.

    Every input pipeline (one per worker) plans the same global batches, a pure function of
    (seed, step), and reads only its replicas' slices of each (cut to the global batch's length
    bucket), so the global batch of a step does not depend on how many devices or machines
    share it.
    """
    start = int(self.step)

    def worker_batches(context):
      local = context.num_replicas_in_sync // context.num_input_pipelines
      first = context.input_pipeline_id * local
      return self.stream.dataset(
        start, num_parts=context.num_replicas_in_sync, parts=range(first, first + local)
      )

    return iter(self.strategy.distribute_datasets_from_function(worker_batches))
