"""The suite's speed goals, and whether a run met each one on the machine it ran on.

Every goal is a ratio taken within one run (`bench.py`). The bfloat16 goal assumes a CPU whose
bfloat16 matmuls are faster than its float32 ones (native bfloat16 units, about 1.6x the float32
rate on the machines the goal was set on). A CPU may list `avx512_bf16` and still multiply
bfloat16 more slowly than float32 (an Intel Xeon without AMX: 0.58x, docs/performance.md), and
on such a CPU a bfloat16 step is not expected to be 2x a float32 one: there the goal is reported
as not applicable, with the measured peaks' ratio that says why, and the figure is still
reported.
"""

GOALS = {
  "sat_tutorial_size_fp32_over_baseline": 3.0,
  "sat_tutorial_size_fp32_over_tutorial": 1.5,
  "sat_tutorial_size_bf16_over_tutorial": 2.0,
  "transformer_tutorial_size_mfu_float32": 0.65,
}
BF16_GOALS = ("sat_tutorial_size_bf16_over_tutorial",)
# The bfloat16 matmul peak over the float32 one above which a CPU counts as having fast bfloat16.
NATIVE_BF16_SPEEDUP = 1.2


def status(measured, peak_float32, peak_bfloat16=None):
  """{goal: {"goal", "measured", "met"}} for each goal of `GOALS`.

  Args:
    measured: {goal name: the run's figure, or None where its jobs did not run}.
    peak_float32: the run's float32 matmul peak (GFLOP/s).
    peak_bfloat16: its bfloat16 matmul peak, or None if it was not measured.

  Returns:
    Per goal its target, the measured figure and "met": True, False, None where nothing was
    measured, or "not applicable" for a bfloat16 goal on a CPU whose bfloat16 matmuls are not
    `NATIVE_BF16_SPEEDUP` times faster than float32 (then also "why").
  """
  report = {}
  for name, goal in GOALS.items():
    value = measured.get(name)
    entry = {"goal": goal, "measured": value, "met": None if value is None else value >= goal}
    if name in BF16_GOALS and peak_bfloat16 is not None:
      speedup = peak_bfloat16 / peak_float32
      if speedup < NATIVE_BF16_SPEEDUP:
        entry["met"] = "not applicable"
        entry["why"] = (
          f"bfloat16 matmuls run at {speedup:.2f}x the float32 rate on this CPU "
          f"(below {NATIVE_BF16_SPEEDUP}x: no native bfloat16 speed)"
        )
    report[name] = entry
  return report
