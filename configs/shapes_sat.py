"""Show-Attend-Tell on the embedded `shapes` dataset: the default experiment.

    python scripts/train.py --config=configs/shapes_sat.py --workdir=workdirs/shapes_sat

Each section reaches the code it configures whole (`Captioner(**config.model)`, the dataset
named by `config.data.name`, each evaluator from its own section), so every key here is an
argument of that code, and a key no code takes fails at once.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg=None):
  """Returns the config; `arg` is unused (kept for the big_vision interface)."""
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
    name="shapes",
    image_size=64,
    max_caption_length=30,  # words, without start/end; the longest is 29
    vocab_size=1000,  # upper bound; min_count may make it smaller
    min_count=1,
    # Training batches are cut to their longest caption, rounded up to a multiple of this
    # (captions of similar length are batched together); 0 pads every batch to the maximum.
    bucket_length_multiple=8,
    # A feature cache of scripts/precompute_features.py (pretrained backbones), or None.
    features=config_dict.placeholder(str),
    # The `shapes` generator (captioning/data/shapes/dataset.py).
    num_train=20000,
    num_val=500,
    num_test=1000,
    num_compositional=1000,
    min_objects=1,
    max_objects=3,
    held_out_pairs=(("red", "triangle"), ("green", "circle"), ("blue", "square")),
  )

  config.model = dict(
    encoder=dict(
      name="small_cnn",
      weights="none",  # "none" | "imagenet" | a path, for encoders that have pretrained weights
      widths=(32, 64, 96, 128),  # one conv per stage
      strides=(4, 1, 2, 1),  # 64 px -> an 8x8 feature map
    ),
    neck=dict(
      # Keypoint channels whose offsets from each location are appended to the feature maps:
      # every location sees where the image's salient features lie relative to it, which is
      # what spatial relations ask (layers.RelativeKeypoints); 0 turns them off.
      relative_keypoints=16,
      # Each location's row and column appended to its features: "linear" | "one_hot".
      position_channels="linear",
      # Transformer encoder blocks over the feature locations before the decoder attends.
      blocks=0,
      block_heads=4,
      block_dropout=0.0,
    ),
    decoder=dict(
      name="sat_lstm",
      embed_dim=128,
      hidden_dim=256,
      attention_dim=192,
      # Dropout before the output layer. 2000 steps of 64 see each caption about once, so the
      # model underfits rather than overfits. With 0.2 two runs reached test fact accuracy
      # 0.879 and 0.919, with 0 both runs reached 0.916 (docs/results.md).
      dropout=0.0,
      # Attention scores see the attention each location received so far (Tu et al. 2016).
      attention_coverage=False,
      # Xu et al.'s gating scalar beta_t on the attended context.
      attention_gate=True,
      # Training drops an example's mean-feature initial state with this probability, so the
      # decoder must find objects by attention (and so learns where they are).
      init_dropout=0.5,
      # The initial state also gets the features' spatial moments (where each feature lies);
      # needs neck.position_channels="linear".
      init_moments=True,
    ),
  )

  config.loss = dict(
    label_smoothing=0.0,
    # Lambda of Xu et al.'s doubly stochastic attention regulariser. Off by default: on an 8x8
    # map its target (every location attended ~once per caption) is unreachable and it
    # flattens the attention that spatial relations need (docs/design.md, docs/results.md).
    doubly_stochastic_weight=0.0,
  )

  # The first `steps` steps train only on captions of min_words to max_words words and, when
  # max_objects > 0, on scenes of min_objects to max_objects objects (`shapes`); 0 steps turns
  # it off. 12-16 words are mostly the captions of 2-object scenes, the ones with one relation.
  config.curriculum = dict(steps=0, min_words=12, max_words=16, min_objects=0, max_objects=0)

  config.train = dict(
    batch_size=64,
    num_steps=2000,  # about 14 minutes on 2 CPU cores, evaluations included
    # 2e-3 learned relations late with some seeds (test fact accuracy 0.901 and 0.845 for
    # seeds 0 and 1); 3e-3 gave 0.913, 0.911 and 0.966 for seeds 0, 1 and 2 (docs/results.md).
    learning_rate=3e-3,
    warmup_steps=200,
    end_learning_rate_factor=0.05,  # cosine decay to lr * this
    weight_decay=0.0,
    grad_clip_norm=5.0,  # of the global gradient, all replicas together
    grad_accumulation_steps=1,  # micro-batches per replica per step (same update, less memory)
    max_consecutive_skips=5,  # updates skipped for a non-finite loss or gradient before stopping
    log_every=100,
    eval_every=1000,
    checkpoint_every=500,
    max_checkpoints=3,
    # WORKDIR/checkpoints/best/ keeps the checkpoint of the best evaluation by this metric (a
    # name the evaluators report; "" keeps none); best_mode "max" | "min" says which is better.
    best_metric="fact_accuracy",
    best_mode="max",
    profile_steps="",  # "START,STOP": a TensorBoard profiler trace of those steps ("": none)
    strategy="default",  # default | mirrored | multi_worker_mirrored
    mixed_precision=config_dict.placeholder(str),  # None | "mixed_bfloat16" | "mixed_float16"
    jit_compile=False,
    deterministic=False,  # TensorFlow's op determinism (scripts/train.py turns it on)
    # Pretrained backbones: from start_step on, their top `layers` layers (BatchNorm excepted)
    # train too, at their own learning rate; 0 layers keeps the backbone frozen.
    fine_tune=dict(layers=0, start_step=0, learning_rate=1e-5),
    init_from="",  # a workdir or checkpoint to start the weights from (not optimizer or step)
  )

  # Captions in evaluation and inference (captioning/decoding.py says what each option does).
  config.decode = dict(
    method="beam",  # greedy | beam | sample
    beam_size=5,
    max_length=30,
    n_best=1,  # beam: captions returned per image
    length_penalty="none",  # beam: none | gnmt | average
    length_penalty_alpha=0.6,  # the gnmt exponent
    temperature=1.0,  # sample: 0 is greedy
    top_k=0,  # sample: from the k likeliest words (0: all)
    top_p=1.0,  # sample: from the likeliest words up to this probability (1: all)
    no_repeat_ngram_size=0,  # 3: never repeat a trigram (0: off)
    seed=0,  # sample: the draws are keyed on it
  )

  config.eval = dict(
    num_examples=250,  # of the val split, during training
    batch_size=250,
    # Run every train.eval_every steps, and by scripts/evaluate.py; each gets its own section.
    evaluators=dict(
      perplexity=dict(),
      captions=dict(metrics=("Bleu", "METEOR", "ROUGE_L", "CIDEr"), num_samples=6),
      relations=dict(max_pairs=500),
    ),
  )

  config = ml_collections.ConfigDict(config)  # nested dicts become ConfigDicts
  config.lock()  # a mistyped --config.x override fails loudly
  return config
