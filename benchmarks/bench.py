"""The benchmark suite (`make bench`): training speed and MFU of each config, as JSON.

    python benchmarks/bench.py [--configs=shapes_sat,...] [--precisions=float32,mixed_bfloat16]

For each config, in each precision, in a process of its own (so its peak host memory is its own
and no trace or allocator state is shared): train examples/sec and the median step time over
`--windows` windows after warm-up, the dims, matmul FLOPs per training example (`flops.py`:
counted from the traced forward graph, times 3 for forward + backward), achieved FLOP/s, MFU
against the dense float32 matmul peak measured at the start of the same run (`peak.py`), peak
host memory, and the input pipeline's examples/sec alone. The shapes configs train on their
own data stream; the tutorial-size configs on random features of their shapes read from a
feature cache (`features.CachedFeatures`, float16 on disk) with random 50-token captions. At
`sat_tutorial_size` the run also times, with the same data, the same SAT maths trained the
tutorials' way (`tutorial_steps.baseline_step`) and the TensorFlow tutorial's own model and
step (`tutorial_steps.TutorialPort`), and reports the ratios; their `mfu` counts the FLOPs they
execute, `useful_mfu` only those of the model's maths (not the recomputed projections). The
jobs of the ratios to the tutorial's step run in `--rounds` rounds, one after another: a ratio
is the median of the rounds' ratios (each from runs minutes apart at most), and a job's
reported result is its median round, with every round's rate beside it. Decode
captions/sec come from `results/decode_*.json` where `decode.py` wrote them.
docs/performance.md has the results.
"""

import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: the package and `benchmarks` import from the root
  sys.path.insert(0, ROOT)

from benchmarks import bench_job  # noqa: E402
from benchmarks import goals  # noqa: E402
from benchmarks import peak  # noqa: E402
from benchmarks import rounds  # noqa: E402
from captioning import files  # noqa: E402
from captioning import runtime  # noqa: E402

CONFIGS = ("shapes_sat", "shapes_transformer", "sat_tutorial_size", "transformer_tutorial_size")
PRECISIONS = ("float32", "mixed_bfloat16")

_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), "Configs of configs/ to time.")
_PRECISIONS = flags.DEFINE_list("precisions", list(PRECISIONS), "float32 | mixed_bfloat16 ...")
_JIT = flags.DEFINE_bool("jit_compile", False, "Also time each config with XLA.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows per variant.", lower_bound=1)
_SECONDS = flags.DEFINE_float("window_seconds", 3.0, "About how long each window runs.")
_TUTORIAL = flags.DEFINE_bool("tutorials", True, "Time the baseline and the tutorial's port.")
_ROUNDS = flags.DEFINE_integer(
  "rounds",
  3,
  "How many times the jobs of the ratios to the tutorial's step (sat_tutorial_size and the "
  "port) run, one round after another: each ratio is the median of the rounds' ratios.",
  lower_bound=1,
)
_OUTPUT = flags.DEFINE_string(
  "output",
  None,
  "Where to write the JSON (default results/bench_<N>cpu_<machine>_<cpu model>.json).",
)
_JOB = flags.DEFINE_string("job", None, "Internal: run one job (JSON) and print its result.")


def _jobs():
  jobs = []
  for name in _CONFIGS.value:
    for precision in _PRECISIONS.value:
      jobs.append({"config": name, "kind": "project", "precision": precision, "jit": False})
      if _JIT.value:
        jobs.append({"config": name, "kind": "project", "precision": precision, "jit": True})
    if name == "sat_tutorial_size" and _TUTORIAL.value:
      jobs.append({"config": name, "kind": "baseline", "precision": "float32", "jit": False})
      jobs.append({"config": name, "kind": "tutorial_port", "precision": "float32", "jit": False})
  for job in jobs:
    job.update(windows=_WINDOWS.value, window_seconds=_SECONDS.value)
  return jobs


def _run_job(job):
  result = subprocess.run(
    [sys.executable, os.path.abspath(__file__), f"--job={json.dumps(job)}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  if result.returncode:
    return {**job, "error": result.stderr[-2000:]}
  return json.loads(result.stdout.strip().splitlines()[-1])


def _decode_rates():
  """{file: captions/sec} of the decode benchmark's results, where present."""
  rates = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "decode_*.json"))):
    with open(path) as f:
      rates[os.path.basename(path)] = json.load(f).get("captions_per_sec")
  return rates


def _summary(runs, results, peaks):
  """The goals' ratios, each the median over rounds of same-round ratios, the MFUs, and whether
  each goal was met (`goals.status`)."""

  def key(kind, precision="float32"):
    return f"sat_tutorial_size/{kind}/{precision}"

  port, fp32, bf16 = key("tutorial_port"), key("project"), key("project", "mixed_bfloat16")
  mfu = {
    name.split("/")[0]: r["mfu"]
    for name, r in results.items()
    if name.endswith("/project/float32") and "mfu" in r
  }
  measured = {
    "sat_tutorial_size_fp32_over_baseline": rounds.ratio(runs, fp32, key("baseline")),
    "sat_tutorial_size_fp32_over_tutorial": rounds.ratio(runs, fp32, port),
    "sat_tutorial_size_bf16_over_tutorial": rounds.ratio(runs, bf16, port),
    "transformer_tutorial_size_mfu_float32": mfu.get("transformer_tutorial_size"),
  }
  peak_bf16 = peaks["bfloat16"]["gflops"] if "bfloat16" in peaks else None
  return {
    **{name: value for name, value in measured.items() if "mfu" not in name},
    "rounds": {
      "fp32_over_tutorial": rounds.round_ratios(runs, fp32, port),
      "bf16_over_tutorial": rounds.round_ratios(runs, bf16, port),
    },
    "bfloat16_peak_over_float32": peak_bf16 and peak_bf16 / peaks["float32"]["gflops"],
    "goals": goals.status(measured, peaks["float32"]["gflops"], peak_bf16),
    "mfu_float32": mfu,
  }


def _default_name():
  """bench_<N>cpu_<machine>_<cpu model>.json: runs on different CPUs keep their own files."""
  model = re.sub(r"\((r|tm)\)|\b(processor|cpu)\b|@.*", "", peak.cpu_model().lower())
  model = "_".join(re.findall(r"[a-z0-9]+", model))
  return (
    f"bench_{os.cpu_count()}cpu_{platform.machine()}" + (f"_{model}" if model else "") + ".json"
  )


def main(argv):
  del argv
  if _JOB.value:
    print(json.dumps(bench_job.run(json.loads(_JOB.value))))
    return
  settings = runtime.setup_process()
  start = time.time()
  peaks = {"float32": peak.matmul_peak("float32")}
  print(f"float32 matmul peak: {peaks['float32']['gflops']:.1f} GFLOP/s", flush=True)
  if "mixed_bfloat16" in _PRECISIONS.value:
    peaks["bfloat16"] = peak.matmul_peak("bfloat16")
    print(f"bfloat16 matmul peak: {peaks['bfloat16']['gflops']:.1f} GFLOP/s", flush=True)
  runs = {}  # name -> the job's result in each round
  for job in rounds.schedule(_jobs(), _ROUNDS.value):
    name = rounds.name(job)
    result = _run_job(job)
    if "train_flops_per_example" in result:
      achieved = result["train_flops_per_example"] * result["train_examples_per_sec"]
      result["achieved_gflops"] = achieved / 1e9
      result["mfu"] = achieved / (peaks["float32"]["gflops"] * 1e9)
      if "useful_train_flops_per_example" in result:  # the baseline and the tutorial's port
        useful = result["useful_train_flops_per_example"] * result["train_examples_per_sec"]
        result["useful_mfu"] = useful / (peaks["float32"]["gflops"] * 1e9)
      if "bfloat16" in peaks and job["precision"] != "float32":
        result["mfu_of_bf16_peak"] = achieved / (peaks["bfloat16"]["gflops"] * 1e9)
    runs.setdefault(name, []).append(result)
    print(
      name,
      json.dumps({k: result.get(k) for k in ("train_examples_per_sec", "mfu", "error")}),
      flush=True,
    )
  # A second peak at the end: the machine's state may have drifted over the run.
  again = peak.matmul_peak("float32")
  results = {name: rounds.median_round(job_runs) for name, job_runs in runs.items()}
  report = {
    "peak_float32": peaks["float32"],
    "peak_float32_at_end": again,
    "peak_bfloat16": peaks.get("bfloat16"),
    "summary": _summary(runs, results, peaks),
    "results": results,
    "decode_captions_per_sec": _decode_rates(),
    "seconds": time.time() - start,
    "cpu_count": os.cpu_count(),
    "cpu_model": peak.cpu_model(),
    "cpu_flags": peak.cpu_flags(),
    "machine": platform.machine(),
    "process_settings": settings,
    **runtime.provenance(),
  }
  text = json.dumps(report, indent=2)
  print(text)
  output = _OUTPUT.value or os.path.join(ROOT, "benchmarks", "results", _default_name())
  files.write_text(output, text + "\n")


if __name__ == "__main__":
  app.run(main)
