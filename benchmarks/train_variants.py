"""Train examples/sec of configs under each scale setting, side by side in one run.

    python benchmarks/train_variants.py [--configs=configs/smoke.py,configs/shapes_sat.py]

For each config: float32 on one device (the reference), mixed_bfloat16, XLA (jit_compile), and
MirroredStrategy over two logical CPU devices; each variant runs benchmarks/train_throughput.py
in its own process (logical devices are fixed when TensorFlow starts), in turn, twice, keeping
the better of the two. Prints and writes one JSON (results/train_variants_Ncpu.json).
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

_CONFIGS = flags.DEFINE_list(
  "configs", ["configs/smoke.py", "configs/shapes_sat.py"], "Config files to time."
)
_STEPS = flags.DEFINE_integer("steps", 40, "Timed train steps per run.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Runs of each variant (the best is kept).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON.")

VARIANTS = {
  "float32": [],
  "mixed_bfloat16": ["--config.train.mixed_precision=mixed_bfloat16"],
  "xla": ["--config.train.jit_compile=True"],
  "mirrored_2_devices": ["--config.train.strategy=mirrored", "--logical_devices=2"],
}


def _run(config, flags_, steps):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    subprocess.run(
      [sys.executable, os.path.join(root, "benchmarks", "train_throughput.py"),
       f"--config={config}", f"--steps={steps}", "--nodecode", f"--output={out.name}", *flags_],
      cwd=root, check=True, capture_output=True, text=True,
    )  # fmt: skip
    with open(out.name) as f:
      return json.load(f)


def main(argv):
  del argv
  results = {}
  for config in _CONFIGS.value:
    runs = {name: [] for name in VARIANTS}
    for _ in range(_ROUNDS.value):  # variants interleaved, so drifts in machine load spread
      for name, extra in VARIANTS.items():
        runs[name].append(_run(config, extra, _STEPS.value))
    best = {name: max(r, key=lambda x: x["train_examples_per_sec"]) for name, r in runs.items()}
    reference = best["float32"]["train_examples_per_sec"]
    results[config] = {
      name: {
        "train_examples_per_sec": round(b["train_examples_per_sec"], 1),
        "all_runs": [round(r["train_examples_per_sec"], 1) for r in runs[name]],
        "vs_float32": round(b["train_examples_per_sec"] / reference, 3),
        "replicas": b["replicas"],
        "train_step_compilations": b["train_step_compilations"],
        "batch_size": b["batch_size"],
      }
      for name, b in best.items()
    }
  output = {"steps": _STEPS.value, "cpu_count": os.cpu_count(), "results": results}
  text = json.dumps(output, indent=2)
  print(text)
  path = _OUTPUT.value or os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "results",
    f"train_variants_{os.cpu_count()}cpu.json",
  )
  with open(path, "w") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
