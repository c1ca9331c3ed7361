"""Show-Attend-Tell on COCO 2014, Karpathy splits (113k train with restval / 5k val / 5k test).

    python scripts/train.py --config=configs/coco_sat.py --workdir=workdirs/coco_sat \
      --config.data.annotations=/data/coco/dataset_coco.json --config.data.image_root=/data/coco

where /data/coco holds train2014/ and val2014/. The same experiment from other sources:

    --config=configs/coco_sat.py:coco_json \
      --config.data.annotations.train=/data/coco/annotations/captions_train2014.json \
      --config.data.image_root.train=/data/coco/train2014 \
      --config.data.annotations.val=/data/coco/annotations/captions_val2014.json \
      --config.data.image_root.val=/data/coco/val2014
    --config=configs/coco_sat.py:tfds      (TFDS coco_captions; its Karpathy splits)

The encoder is configs/flickr8k_sat.py's frozen ImageNet ResNet50.
"""

from ml_collections import config_dict

from captioning import config_files

SOURCES = ("karpathy", "coco_json", "tfds")


def get_config(arg=None):
  """Returns the config; `arg` picks where COCO comes from: one of SOURCES (default karpathy)."""
  source = arg or "karpathy"
  if source not in SOURCES:
    raise ValueError(f"configs/coco_sat.py:{source}: the source must be one of {SOURCES}")
  config = config_files.base(__file__, "flickr8k_sat").get_config()
  config.unlock()
  pipeline_keys = dict(
    image_size=224,
    resize="crop",
    cache_dir="~/.cache/captioning",
    max_caption_length=20,
    vocab_size=10000,
    min_count=5,  # about 10,000 words on COCO
    bucket_length_multiple=8,
    features=config_dict.placeholder(str),
  )
  if source == "karpathy":
    config.data = dict(
      name="karpathy_json", annotations="", image_root="", use_restval=True, **pipeline_keys
    )
  elif source == "coco_json":
    config.data = dict(
      name="coco_json",
      annotations=dict(train="", val="", test=""),  # test: optional, e.g. a part of val2014
      image_root=dict(train="", val="", test=""),
      **pipeline_keys,
    )
  else:
    config.data = dict(
      name="tfds",
      tfds_name="coco_captions",
      split_names=dict(train="train+restval", val="val", test="test"),
      image_key="image",
      captions_key="captions/text",
      id_key="image/id",
      data_dir=config_dict.placeholder(str),  # TFDS's folder; None: ~/tensorflow_datasets
      **pipeline_keys,
    )
  config.train.num_steps = 100000  # about 6 epochs of COCO's 566k training captions
  config.train.batch_size = 64
  config.train.eval_every = 5000
  config.train.checkpoint_every = 2000
  config.eval.num_examples = 1000
  config.lock()
  return config
