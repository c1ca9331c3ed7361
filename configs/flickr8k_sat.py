"""Show-Attend-Tell on Flickr8k (Karpathy splits): 6,000 / 1,000 / 1,000 photos, 5 captions each,
on a frozen ImageNet ResNet50.

    python scripts/train.py --config=configs/flickr8k_sat.py --workdir=workdirs/flickr8k_sat \
      --config.data.annotations=/data/flickr8k/dataset_flickr8k.json \
      --config.data.image_root=/data/flickr8k/Flicker8k_Dataset

Flickr30k is the same with dataset_flickr30k.json and its image folder. With a frozen backbone,
computing its grids once pays: `scripts/precompute_features.py --config=... --output=DIR`, then
`--config.data.features=DIR`.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg=None):
  """Returns the config; `arg` is unused (kept for the big_vision interface)."""
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
    name="karpathy_json",
    annotations="",  # dataset_flickr8k.json, on the command line
    image_root="",  # the folder of the .jpg files, on the command line
    use_restval=False,  # Flickr has no restval split
    image_size=224,
    resize="crop",  # "crop": scale the shorter side, cut the centre; "pad": letterbox
    cache_dir="~/.cache/captioning",  # file checks remembered between runs
    max_caption_length=20,  # words; longer captions are cut (2% of Flickr8k's)
    vocab_size=10000,  # upper bound; min_count decides (about 2,900 words on Flickr8k)
    min_count=5,
    bucket_length_multiple=8,
    # A feature cache of scripts/precompute_features.py (pretrained backbones), or None.
    features=config_dict.placeholder(str),
  )

  config.model = dict(
    # ImageNet ResNet50, frozen: a 7x7x2048 grid at 224 px (downloaded by Keras on first use;
    # --config.model.encoder.weights=none trains without any download). Any backbone of
    # captioning/models/encoders.py fits here, or small_cnn (widths, strides) from scratch.
    encoder=dict(name="resnet50", weights="imagenet", project_dim=0),
    neck=dict(
      relative_keypoints=0,
      position_channels="linear",
      blocks=0,
      block_heads=4,
      block_dropout=0.0,
    ),
    decoder=dict(
      name="sat_lstm",
      embed_dim=256,
      hidden_dim=512,
      attention_dim=512,
      dropout=0.3,
      attention_coverage=False,
      attention_gate=True,
      init_dropout=0.0,
      init_moments=False,
    ),
  )

  config.loss = dict(label_smoothing=0.0, doubly_stochastic_weight=1.0)  # Xu et al.'s lambda
  config.curriculum = dict(steps=0, min_words=0, max_words=20)

  config.train = dict(
    batch_size=32,
    num_steps=30000,  # about 160 epochs of Flickr8k's 30,000 captions at batch 32
    learning_rate=1e-3,
    warmup_steps=1000,
    end_learning_rate_factor=0.05,
    weight_decay=0.0,
    grad_clip_norm=5.0,  # of the global gradient, all replicas together
    grad_accumulation_steps=1,  # micro-batches per replica per step (same update, less memory)
    max_consecutive_skips=5,  # updates skipped for a non-finite loss or gradient before stopping
    log_every=100,
    eval_every=2000,
    checkpoint_every=1000,
    max_checkpoints=3,
    best_metric="CIDEr",  # WORKDIR/checkpoints/best/ keeps the best evaluation's ("": none)
    best_mode="max",  # max | min
    profile_steps="",  # "START,STOP": a TensorBoard profiler trace of those steps ("": none)
    strategy="default",
    mixed_precision=config_dict.placeholder(str),
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
    beam_size=3,
    max_length=20,
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
    num_examples=500,
    batch_size=50,
    evaluators=dict(
      perplexity=dict(),
      captions=dict(metrics=("Bleu", "METEOR", "ROUGE_L", "CIDEr"), num_samples=6),
    ),
  )

  config = ml_collections.ConfigDict(config)
  config.lock()
  return config
