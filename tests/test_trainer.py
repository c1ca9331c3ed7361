"""Building a training run: fine-tuning a pretrained backbone from a step on, and starting the
weights from another run (no download: weights "none")."""

import os

import numpy as np
import pytest

from captioning import experiment
from captioning import train
from captioning import trainer
import helpers

TINY = {
  "train.num_steps": 6,
  "train.log_every": 3,
  "train.checkpoint_every": 2,
  "train.eval_every": 1000,
  "train.warmup_steps": 1,
  "train.batch_size": 8,
  "data.num_train": 100,
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "eval.num_examples": 8,
  "eval.evaluators": {"perplexity": {}},
  "data.bucket_length_multiple": 0,
}
BACKBONE = {
  "data.image_size": 64,
  "model.encoder": {"name": "mobilenet_v3_small", "weights": "none", "project_dim": 16},
  "model.neck.relative_keypoints": 0,
  "train.fine_tune": {"layers": 2, "start_step": 3, "learning_rate": 1e-3},
}


def snapshot(variables):
  return [v.numpy().copy() for v in variables]


def changed(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_the_backbone_trains_its_top_layers_from_the_start_step(tmp_path):
  config = helpers.load_config(**TINY, **BACKBONE)
  run = trainer.TrainingRun.create(config, str(tmp_path / "w"))
  head_optimizer, head = run.optimizers["optimizer"]
  backbone_optimizer, tuned = run.optimizers["backbone_optimizer"]
  network = run.model.encoder.network
  frozen = [v for v in network.weights if all(v is not t for t in tuned)]
  assert tuned and frozen and not {id(v) for v in tuned} & {id(v) for v in head}
  start = [snapshot(x) for x in (head, tuned, frozen)]
  batches = run.batches()
  for _ in range(3):  # before the start step: the backbone is frozen
    run.run_step(next(batches))
    run.step.assign_add(1)
  # (Every head variable but the attention score's bias, which shifts every location's score
  # alike: the softmax ignores it, so its gradient is zero.)
  moved = {v.path: c for v, c in zip(head, changed(start[0], head))}
  assert [p for p, c in moved.items() if not c] == ["captioner/decoder/attention/score/bias"]
  assert not any(changed(start[1], tuned))
  assert int(backbone_optimizer.iterations) == 0
  for _ in range(3):  # from the start step: its top layers train, the rest stays
    run.run_step(next(batches))
    run.step.assign_add(1)
  assert all(changed(start[1], tuned)) and not any(changed(start[2], frozen))
  assert int(backbone_optimizer.iterations) == 3 and int(head_optimizer.iterations) == 6


def test_resuming_across_the_switch_restores_both_optimizers(tmp_path):
  workdir = str(tmp_path / "w")
  config = helpers.load_config(**dict(TINY, **{"train.num_steps": 4}), **BACKBONE)
  train.train_and_evaluate(config, workdir)
  config = helpers.load_config(**TINY, **BACKBONE)  # resume to 6 steps
  run = trainer.TrainingRun.create(config, workdir)
  assert int(run.step) == 4
  assert int(run.optimizers["backbone_optimizer"][0].iterations) == 1  # step 3 only
  assert int(run.optimizers["optimizer"][0].iterations) == 4
  train.train_and_evaluate(config, workdir)
  # The restore that evaluation does builds both optimizers, or the weights would not line up.
  _, _, model, step = experiment.restore(workdir)
  assert step == 6
  final = trainer.TrainingRun.create(config, workdir)
  for a, b in zip(final.model.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert int(final.optimizers["backbone_optimizer"][0].iterations) == 3


def test_weights_start_from_another_run_but_not_its_optimizer_or_step(tmp_path):
  source = str(tmp_path / "source")
  train.train_and_evaluate(helpers.load_config(**TINY), source)
  _, _, trained, _ = experiment.restore(source)
  config = helpers.load_config(**dict(TINY, **{"train.init_from": source}))
  run = trainer.TrainingRun.create(config, str(tmp_path / "target"))
  assert int(run.step) == 0 and int(run.optimizer.iterations) == 0
  for a, b in zip(trained.weights, run.model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # A checkpoint path works too; a model of another shape is refused, naming the key.
  checkpoint = os.path.join(source, "checkpoints", "ckpt-6")
  config = helpers.load_config(**dict(TINY, **{"train.init_from": checkpoint}))
  trainer.TrainingRun.create(config, str(tmp_path / "target2"))
  other = helpers.load_config(
    **dict(TINY, **{"train.init_from": source, "model.decoder.hidden_dim": 64})
  )
  with pytest.raises(ValueError, match=r"config\.train\.init_from: .* does not fit this model"):
    trainer.TrainingRun.create(other, str(tmp_path / "target3"))
  missing = helpers.load_config(**dict(TINY, **{"train.init_from": str(tmp_path / "nothing")}))
  with pytest.raises(ValueError, match="no checkpoint at"):
    trainer.TrainingRun.create(missing, str(tmp_path / "target4"))


def test_fine_tuning_needs_a_pretrained_backbone(tmp_path):
  config = helpers.load_config(
    **dict(TINY, **{"train.fine_tune": {"layers": 2, "start_step": 0, "learning_rate": 1e-4}})
  )
  with pytest.raises(ValueError, match=r"fine_tune\.layers needs a pretrained backbone"):
    trainer.TrainingRun.create(config, str(tmp_path / "w"))
