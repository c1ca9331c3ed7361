"""The captioning models. Importing this package registers every layer with Keras, so that

    import captioning.models
    model = keras.saving.load_model("WORKDIR/model.keras")

works in a fresh process. (`import captioning` alone does not import TensorFlow, so that the
pure-Python scorers load without it.)
"""

from captioning.models import captioner
from captioning.models import decoders
from captioning.models import encoders
from captioning.models import layers
from captioning.models import neck
from captioning.models import output_projection
from captioning.models import transformer

__all__ = [
  "captioner",
  "decoders",
  "encoders",
  "layers",
  "neck",
  "output_projection",
  "transformer",
]
