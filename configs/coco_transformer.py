"""A Transformer decoder on COCO (Karpathy splits) over a frozen ImageNet ResNet50's grid.

    python scripts/train.py --config=configs/coco_transformer.py --workdir=workdirs/coco_tf \
      --config.data.annotations=/data/coco/dataset_coco.json --config.data.image_root=/data/coco

`--config=configs/coco_transformer.py:coco_json` and `:tfds` read COCO as configs/coco_sat.py
says. Everything but the decoder section is configs/coco_sat.py's.
"""

from captioning import config_files


def get_config(arg=None):
  """Returns the config; `arg` picks the COCO source, as in configs/coco_sat.py."""
  config = config_files.base(__file__, "coco_sat").get_config(arg)
  config.unlock()
  config.model.decoder = config_files.base(__file__, "flickr8k_transformer").transformer_decoder()
  config.loss.doubly_stochastic_weight = 0.0  # a SAT regulariser
  config.train.learning_rate = 3e-4
  config.lock()
  return config
