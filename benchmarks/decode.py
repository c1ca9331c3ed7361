"""Decoding speed: the batched in-graph search beside a per-image Python loop; prints JSON.

    python benchmarks/decode.py --config=configs/shapes_sat.py [--num_images=16]
    python benchmarks/decode.py --workdir=workdirs/shapes_sat     # a trained model's weights

Captions/sec of `decoding.Search` (greedy, beam 3, beam 5; at batch 1 and 64 by default) and,
on the same weights, of the way the TensorFlow image-captioning tutorial's `evaluate()`
decodes: one image at a time, encoded, then a Python `for` loop calling the decoder's `step`
eagerly for a batch of one and taking the argmax until `<end>` (`loop_decoders.loop_greedy`); and a
Python beam search of 5 over one image whose beams are the rows of the eager `step` (`loop_beam`).
Both loops keep the search's rules (no `<pad>` or `<start>`; the step after `max_length` words
may only end, and only where `<end>` is likeliest), so they find the captions the batched search
finds: the benchmark checks that on the timed images.

Each timing is the median of `--repeats` runs after an untimed one that traces the search (or
warms the eager kernels). A batched variant decodes whole batches of its size, at least
`--num_images` images per run; the loops decode `--num_images` images per run. Both search with
`Search`'s default options (summed log-probabilities, no length penalty or repetition guard).
Each variant also reports the work done: the mean steps of its captions (words + the `<end>`
step; `max_length + 1` for a caption that never ends) and the decoder steps it ran, counted: per
batch for the batched search (each over batch x beams rows; `max_length + 1` unless the search
stops early), per image for the loops (the beam loop stops once its best finished caption beats
every live one).

Fresh weights (no `--workdir`) time the code, not a model: greedy captions never end, while
beam search finds the caption `<end>` at once (the output bias starts from word frequencies),
which the beam loop stops after two steps and the batched search may not. The figures that
matter come from a trained `--workdir`.

The JSON goes to stdout and to `--output` (default
benchmarks/results/decode_<config or workdir name>_<N>cpu.json).
"""

import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from captioning import decoding
from captioning import experiment
from captioning import features
from captioning import files
from captioning import runtime
from captioning import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script, benchmarks/ is on the path, not the repository
  sys.path.insert(0, ROOT)
from benchmarks import loop_decoders  # noqa: E402  (needs ROOT on the path)

# The batched searches timed; loops exist for the first and the last.
_SEARCHES = (("greedy", 1), ("beam", 3), ("beam", 5))
_LOOP_BEAM = 5
# The speed-up asked of batched beam 5 at the largest batch over the per-image beam loop.
_TARGET_RATIO = 10.0

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_sat.py", "Config file.")
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "A training workdir: benchmark its config and weights (--config is ignored)."
)
_NUM_IMAGES = flags.DEFINE_integer(
  "num_images", 16, "Images each timed run decodes (at least one batch).", lower_bound=1
)
_BATCH_SIZES = flags.DEFINE_multi_integer(
  "batch_size", [1, 64], "Batch sizes of the batched search (repeat the flag).", lower_bound=1
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs; the median is reported.", lower_bound=1)
_JIT = flags.DEFINE_bool("jit_compile", False, "Compile the batched search with XLA.")
_OUTPUT = flags.DEFINE_string(
  "output", None, "Where to write the JSON (default benchmarks/results/decode_NAME_Ncpu.json)."
)


class _CountingDecoder:
  """A decoder whose `step` calls are counted in a variable, also inside a `tf.function`."""

  def __init__(self, decoder):
    self._decoder = decoder
    self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)

  def __getattr__(self, name):
    return getattr(self._decoder, name)

  def step(self, *args, **kwargs):
    logits, state, outputs = self._decoder.step(*args, **kwargs)
    with tf.control_dependencies([self.calls.assign_add(1)]):
      return tf.identity(logits), state, outputs


class _CountingModel:
  """A captioner whose decoder counts its steps (for `Search`, which reads `model.decoder`)."""

  def __init__(self, model):
    self._model = model
    self.decoder = _CountingDecoder(model.decoder)

  def __getattr__(self, name):
    return getattr(self._model, name)


def _median_seconds(fn, repeats, warmup):
  """(median seconds of `repeats` calls of `fn` after `warmup()`, every time, fn's last result)."""
  warmup()
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times, out


def _captions(out, tokenizer):
  """A Search result per image: (words then `<end>` if there, finished, log-prob)."""
  result = []
  for row, finished, log_prob in zip(out["tokens"], out["finished"], out["log_prob"]):
    words = []
    for token in row.tolist():
      if token == tokenizer.pad_id:
        break
      words.append(token)
      if token == tokenizer.end_id:
        break
    result.append((words, bool(finished), float(log_prob)))
  return result


def _summary(seconds, times, captions, max_length, **extra):
  """A variant's entry: captions/sec and the work done (see the module docstring)."""
  # A caption's steps: its words and <end>, or max_length + 1 if it never ended.
  steps = [len(words) if done else max_length + 1 for words, done, _ in captions]
  return {
    "captions_per_sec": len(captions) / seconds,
    "seconds_median": seconds,
    "seconds_all": times,
    "captions_per_run": len(captions),
    "mean_caption_steps": float(np.mean(steps)),
    "mean_words": float(np.mean([len(words) - done for words, done, _ in captions])),
    "finished_fraction": float(np.mean([done for _, done, _ in captions])),
    "mean_log_prob": float(np.mean([lp for _, _, lp in captions])),
    **extra,
  }


def time_search(model, tokenizer, images, *, method, beam_size, batch_size, settings):
  """Times `decoding.Search` over the first ceil(num_images / batch_size) batches of images.

  Args:
    model: a built Captioner.
    tokenizer: supplies the special ids.
    images: {"image" or "features": [N, ...]}, N at least the images decoded.
    method: "greedy" or "beam".
    beam_size: beams per image.
    batch_size: images per call.
    settings: {"num_images", "max_length", "repeats", "jit_compile"}.

  Returns:
    (the variant's summary, its captions: (tokens, finished, log-prob) per image).
  """
  calls = math.ceil(settings["num_images"] / batch_size)
  batches = [
    {k: v[i * batch_size : (i + 1) * batch_size] for k, v in images.items()} for i in range(calls)
  ]
  if any(len(v) != batch_size for batch in batches for v in batch.values()):
    raise ValueError(f"{calls} batches of {batch_size} need more images than were given")

  search_of = functools.partial(
    decoding.Search,
    tokenizer=tokenizer,
    method=method,
    max_length=settings["max_length"],
    beam_size=beam_size,
    jit_compile=settings["jit_compile"],
  )
  search = search_of(model)

  def decode_all():
    outs = [search(batch) for batch in batches]
    return [{k: out[k].numpy() for k in ("tokens", "finished", "log_prob")} for out in outs]

  seconds, times, outs = _median_seconds(decode_all, settings["repeats"], warmup=decode_all)
  # The decoder steps the search ran, counted by a second copy of it, outside the timing.
  counting = _CountingModel(model)
  counted = search_of(counting)
  for batch in batches:
    counted(batch)["tokens"].numpy()
  captions = [c for out in outs for c in _captions(out, tokenizer)]
  summary = _summary(
    seconds,
    times,
    captions,
    settings["max_length"],
    decoder="batched",
    method=method,
    beam_size=beam_size,
    batch_size=batch_size,
    decoder_steps_per_batch=int(counting.decoder.calls.numpy()) / calls,
    rows_per_decoder_step=batch_size * beam_size,
  )
  return summary, captions


def time_loop(model, tokenizer, images, *, beam_size, settings):
  """Times the per-image Python loop (greedy when beam_size is 1) over num_images images.

  Returns:
    As `time_search`.
  """
  max_length = settings["max_length"]
  singles = [{k: v[i : i + 1] for k, v in images.items()} for i in range(settings["num_images"])]

  def decode(image):
    if beam_size == 1:
      return loop_decoders.loop_greedy(model, tokenizer, image, max_length)
    return loop_decoders.loop_beam(model, tokenizer, image, max_length, beam_size)

  seconds, times, outs = _median_seconds(
    lambda: [decode(image) for image in singles],
    settings["repeats"],
    warmup=lambda: decode(singles[0]),  # eager kernels and layer calls, on one image
  )
  captions = [(o["tokens"], o["finished"], o["log_prob"]) for o in outs]
  summary = _summary(
    seconds,
    times,
    captions,
    max_length,
    decoder="python_loop",
    method="greedy" if beam_size == 1 else "beam",
    beam_size=beam_size,
    batch_size=1,
    decoder_steps_per_image=float(np.mean([o["steps"] for o in outs])),
    rows_per_decoder_step=beam_size,
  )
  return summary, captions


def _agreement(loop, batched):
  """How the loop's captions compare with the batched search's on the same images."""
  pairs = list(zip(loop, batched))  # the loop's images are the batched search's first ones
  return {
    "same_tokens": float(np.mean([a[0] == b[0] for a, b in pairs])),
    # A search may find a better caption than the other where scores nearly tie.
    "loop_log_prob_at_least_batched": float(np.mean([a[2] >= b[2] - 1e-4 for a, b in pairs])),
  }


def benchmark(
  model, tokenizer, images, *, batch_sizes, num_images, max_length, repeats=5, jit_compile=False
):
  """Times every variant on the same weights and images.

  Args:
    model: a built Captioner.
    tokenizer: supplies the special ids.
    images: {"image" or "features": [N, ...]}, enough for ceil(num_images / b) whole batches
      of every batch size b.
    batch_sizes: of the batched search.
    num_images: images each timed run decodes (the loops exactly these, the batched search at
      least these, one batch at the least).
    max_length: the most words of a caption.
    repeats: timed runs per variant.
    jit_compile: compile the batched search with XLA.

  Returns:
    {"captions_per_sec": {variant: number}, "ratios", "agreement_with_loops", "variants"}.
  """
  settings = dict(
    num_images=num_images, max_length=max_length, repeats=repeats, jit_compile=jit_compile
  )
  variants, captions = {}, {}
  for beam_size in (1, _LOOP_BEAM):
    name = "loop_greedy" if beam_size == 1 else f"loop_beam{beam_size}"
    variants[name], captions[name] = time_loop(
      model, tokenizer, images, beam_size=beam_size, settings=settings
    )
    logging.info("%s: %.1f captions/sec", name, variants[name]["captions_per_sec"])
  agreement = {}
  for method, beam_size in _SEARCHES:
    for batch_size in batch_sizes:
      search = "greedy" if method == "greedy" else f"beam{beam_size}"
      name = f"{search}_batch{batch_size}"
      variants[name], captions[name] = time_search(
        model,
        tokenizer,
        images,
        method=method,
        beam_size=beam_size,
        batch_size=batch_size,
        settings=settings,
      )
      logging.info("%s: %.1f captions/sec", name, variants[name]["captions_per_sec"])
      loop = f"loop_{search}"
      if loop in captions:
        agreement[f"{name}_vs_{loop}"] = _agreement(captions[loop], captions[name])
  for name, entry in agreement.items():
    if name.startswith("greedy") and entry["same_tokens"] < 1.0:
      logging.warning("%s: the greedy loop decodes differently: %s", name, entry)
  rate = {name: entry["captions_per_sec"] for name, entry in variants.items()}
  largest = max(batch_sizes)
  beam, greedy = f"beam{_LOOP_BEAM}_batch{largest}", f"greedy_batch{largest}"
  ratios = {
    f"{beam}_over_loop_beam{_LOOP_BEAM}": rate[beam] / rate[f"loop_beam{_LOOP_BEAM}"],
    f"{greedy}_over_loop_greedy": rate[greedy] / rate["loop_greedy"],
    f"{beam}_over_loop_greedy": rate[beam] / rate["loop_greedy"],
  }
  goal = ratios[f"{beam}_over_loop_beam{_LOOP_BEAM}"]
  return {
    "captions_per_sec": rate,
    "ratios": ratios,
    "goal": {
      "asked": f"{beam} at least {_TARGET_RATIO:g}x the per-image beam-{_LOOP_BEAM} loop",
      "ratio": goal,
      "met": goal >= _TARGET_RATIO,
    },
    "agreement_with_loops": agreement,
    "variants": variants,
  }


def load(config, workdir):
  """The model, tokenizer and images to benchmark: a workdir's, or a fresh run of `config`.

  Returns:
    (config, tokenizer, model, split to draw images from, what the weights are).
  """
  if workdir:
    config, tokenizer, model, step = experiment.restore(workdir)
    dataset = features.open_dataset(config)
    return config, tokenizer, model, dataset.split(dataset.eval_split), f"{workdir} step {step}"
  with tempfile.TemporaryDirectory() as tmp:  # built as training builds it; nothing kept
    run = trainer.TrainingRun.create(config, tmp)
  return run.config, run.tokenizer, run.model, run.eval_split, "fresh (initialised, untrained)"


def machine():
  """What the numbers depend on beyond the config: the host, versions, threads."""
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {
    **runtime.provenance(),
    "usable_cpus": usable,
    "machine": platform.machine(),
    "processor": platform.processor(),
    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
  }


def default_output(name):
  """benchmarks/results/decode_NAME_Ncpu.json (NAME: the config file's or workdir's)."""
  usable = machine()["usable_cpus"]
  return os.path.join(ROOT, "benchmarks", "results", f"decode_{name}_{usable}cpu.json")


def main(argv):
  del argv
  runtime.setup_process()
  # Every variant is a Search of its own, traced once per batch shape, on purpose.
  tf.get_logger().addFilter(
    lambda record: "triggered tf.function retracing" not in record.getMessage()
  )
  workdir = _WORKDIR.value
  config_file = flags.FLAGS["config"].config_filename
  config, tokenizer, model, split, weights = load(_CONFIG.value, workdir)
  if workdir:
    name = os.path.basename(os.path.normpath(workdir))
  else:
    path, _, arg = config_file.partition(":")
    name = os.path.splitext(os.path.basename(path))[0] + (f"_{arg}" if arg else "")
  batch_sizes = sorted(set(_BATCH_SIZES.value))
  count = max(math.ceil(_NUM_IMAGES.value / b) * b for b in batch_sizes)  # whole batches
  indices = np.arange(count) % len(split)  # a small split is cycled
  images = {split.images.key: tf.constant(split.images.numpy(indices))}
  result = {
    "config": None if workdir else config_file,
    "workdir": workdir,
    "weights": weights,
    "decode": {"max_length": config.decode.max_length, "jit_compile": _JIT.value},
    "vocab_size": tokenizer.vocab_size,
    "num_images": _NUM_IMAGES.value,
    "batch_sizes": batch_sizes,
    "repeats": _REPEATS.value,
    **benchmark(
      model,
      tokenizer,
      images,
      batch_sizes=batch_sizes,
      num_images=_NUM_IMAGES.value,
      max_length=config.decode.max_length,
      repeats=_REPEATS.value,
      jit_compile=_JIT.value,
    ),
    "machine": machine(),
  }
  text = json.dumps(result, indent=2)
  print(text)
  output = _OUTPUT.value or default_output(name)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  files.write_text(output, text + "\n")
  logging.info("Wrote %s", output)


if __name__ == "__main__":
  app.run(main)
