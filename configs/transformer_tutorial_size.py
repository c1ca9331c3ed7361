"""A Transformer decoder at the size of the TensorFlow Transformer captioning tutorial.

    python scripts/precompute_features.py --config=configs/transformer_tutorial_size.py \
      --config.data.annotations=/data/coco/dataset_coco.json --config.data.image_root=/data/coco
    python scripts/train.py --config=configs/transformer_tutorial_size.py --workdir=... \
      --config.data.annotations=... --config.data.image_root=... --config.data.features=...

As the tutorial: a frozen MobileNetV3Small's 7x7 grid of 224-px images, cached: features
[49, 576]; 2 layers of width 256 with 2 heads and a 512-wide MLP; a 5,000-word vocabulary;
captions of up to 48 words (50 tokens: 49 decoder positions); batch 32. `make bench` times it on
random features of these shapes (docs/performance.md). Everything else is
configs/coco_transformer.py's; `arg` picks the COCO source as in configs/coco_sat.py.
"""

from captioning import config_files


def get_config(arg=None):
  """Returns the config; `arg` is configs/coco_sat.py's COCO source."""
  config = config_files.base(__file__, "coco_transformer").get_config(arg)
  config.unlock()
  config.data.image_size = 224  # MobileNetV3Small's grid: 7x7 = 49 locations of 576 channels
  config.data.vocab_size = 5000
  config.data.max_caption_length = 48
  config.model.encoder = dict(name="mobilenet_v3_small", weights="imagenet", project_dim=0)
  config.model.neck.position_channels = "none"
  config.model.decoder = dict(
    name="transformer",
    num_layers=2,
    width=256,
    num_heads=2,
    mlp_dim=512,
    dropout=0.1,
    max_length=50,  # positions: <start> and up to 48 words, then <end>
    tie_embeddings=False,
  )
  config.train.batch_size = 32
  config.lock()
  return config
