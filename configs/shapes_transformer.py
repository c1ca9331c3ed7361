"""A Transformer decoder on the embedded `shapes` dataset, beside the Show-Attend-Tell default.

    python scripts/train.py --config=configs/shapes_transformer.py --workdir=workdirs/shapes_tf

Everything but the decoder section is the default experiment's (configs/shapes_sat.py).
"""

from captioning import config_files


def get_config(arg=None):
  """Returns the config; `arg` is unused (kept for the big_vision interface)."""
  config = config_files.base(__file__, "shapes_sat").get_config(arg)
  config.unlock()
  config.model.decoder = dict(
    name="transformer",
    num_layers=2,
    width=256,
    num_heads=4,
    mlp_dim=512,
    dropout=0.0,  # 2000 steps see each caption about once: the model underfits
    max_length=32,  # positions: <start> and up to 30 words, then <end>
    tie_embeddings=True,
  )
  config.model.neck.position_channels = "linear"
  config.train.learning_rate = 1e-3
  config.lock()
  return config
