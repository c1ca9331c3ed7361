"""The decoding options' names and ranges, checked without TensorFlow.

`decoding.Search` checks its options with `check_options`; so do the config checks and the
scripts' flags (`scripts/evaluate.py` scores a results file without importing TensorFlow).
"""

METHODS = ("greedy", "beam", "sample")
LENGTH_PENALTIES = ("none", "gnmt", "average")


def check_options(
  *,
  method,
  max_length,
  beam_size=1,
  n_best=1,
  length_penalty="none",
  length_penalty_alpha=0.6,
  temperature=1.0,
  top_k=0,
  top_p=1.0,
  no_repeat_ngram_size=0,
  seed=0,
):
  """Raises ValueError naming the first decoding option out of range (see `decoding.Search`)."""
  del seed  # any int
  checks = (
    (method in METHODS, f"method must be one of {METHODS}, got {method!r}"),
    (max_length >= 1, f"max_length must be >= 1, got {max_length}"),
    (beam_size >= 1, f"beam_size must be >= 1, got {beam_size}"),
    (n_best >= 1, f"n_best must be >= 1, got {n_best}"),
    (
      n_best == 1 or (method == "beam" and n_best <= beam_size),
      f"n_best {n_best} needs method 'beam' with beam_size >= n_best "
      f"(method {method!r}, beam_size {beam_size})",
    ),
    (
      length_penalty in LENGTH_PENALTIES,
      f"length_penalty must be one of {LENGTH_PENALTIES}, got {length_penalty!r}",
    ),
    (length_penalty_alpha >= 0, f"length_penalty_alpha must be >= 0, got {length_penalty_alpha}"),
    (temperature >= 0, f"temperature must be >= 0 (0: always the likeliest), got {temperature}"),
    (top_k >= 0, f"top_k must be >= 0 (0: every word), got {top_k}"),
    (0 < top_p <= 1, f"top_p must be in (0, 1] (1: every word), got {top_p}"),
    (
      no_repeat_ngram_size == 0 or no_repeat_ngram_size >= 2,
      f"no_repeat_ngram_size must be 0 (off) or >= 2, got {no_repeat_ngram_size}",
    ),
  )
  for ok, message in checks:
    if not ok:
      raise ValueError(message)
