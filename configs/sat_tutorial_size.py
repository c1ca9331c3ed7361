"""Show-Attend-Tell at the size of the TensorFlow image-captioning tutorial, on COCO features.

    python scripts/precompute_features.py --config=configs/sat_tutorial_size.py \
      --config.data.annotations=/data/coco/dataset_coco.json --config.data.image_root=/data/coco
    python scripts/train.py --config=configs/sat_tutorial_size.py --workdir=workdirs/sat_tut \
      --config.data.annotations=... --config.data.image_root=... \
      --config.data.features=~/.cache/captioning/features/...

The paper's decoder (gating scalar on; no relative keypoints, coverage, position channels or
encoder blocks) over a frozen ResNet50's 8x8 grid of 256-px images, cached: features [64, 2048],
embedding 256, LSTM 512, attention 512, a 5,000-word vocabulary, captions of up to 48 words (50
tokens with <start> and <end>: 49 decoder steps), batch 64. `make bench` times it on random
features of these shapes beside the tutorial's own train step (docs/performance.md).
Everything else is configs/coco_sat.py's; `arg` picks the COCO source as there.
"""

from captioning import config_files


def get_config(arg=None):
  """Returns the config; `arg` is configs/coco_sat.py's COCO source."""
  config = config_files.base(__file__, "coco_sat").get_config(arg)
  config.unlock()
  config.data.image_size = 256  # ResNet50's grid: 8x8 = 64 locations of 2048 channels
  config.data.vocab_size = 5000
  config.data.max_caption_length = 48
  config.model.encoder = dict(name="resnet50", weights="imagenet", project_dim=0)
  config.model.neck.position_channels = "none"
  config.model.decoder = dict(
    name="sat_lstm",
    embed_dim=256,
    hidden_dim=512,
    attention_dim=512,
    dropout=0.3,
    attention_coverage=False,
    attention_gate=True,
    init_dropout=0.0,
    init_moments=False,
  )
  config.train.batch_size = 64
  config.lock()
  return config
