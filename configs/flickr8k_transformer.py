"""A Transformer decoder on Flickr8k (Karpathy splits) over a frozen ImageNet ResNet50's grid.

    python scripts/train.py --config=configs/flickr8k_transformer.py --workdir=workdirs/f8k_tf \
      --config.data.annotations=/data/flickr8k/dataset_flickr8k.json \
      --config.data.image_root=/data/flickr8k/Flicker8k_Dataset

Everything but the decoder section is configs/flickr8k_sat.py's.
"""

from captioning import config_files


def transformer_decoder():
  """The decoder section the real-photo Transformer configs share."""
  return dict(
    name="transformer",
    num_layers=3,
    width=512,
    num_heads=8,
    mlp_dim=2048,
    dropout=0.1,
    max_length=24,  # positions: <start> and up to 20 words, then <end>
    tie_embeddings=True,
  )


def get_config(arg=None):
  """Returns the config; `arg` is unused (kept for the big_vision interface)."""
  config = config_files.base(__file__, "flickr8k_sat").get_config(arg)
  config.unlock()
  config.model.decoder = transformer_decoder()
  config.loss.doubly_stochastic_weight = 0.0  # a SAT regulariser
  config.train.learning_rate = 3e-4
  config.lock()
  return config
