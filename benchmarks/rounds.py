"""Rounds of benchmark jobs: the order they run in, and ratios taken round by round.

A machine's speed drifts over minutes, so a ratio of two jobs' rates is steadier when each
round's two runs are close in time and the ratio is the median of the rounds' ratios.
`bench.py` runs every job once and the jobs of the ratios to the tutorial's step in more rounds.
"""

import statistics


def name(job):
  """A job's key in the report: config/kind/precision[/xla]."""
  return f"{job['config']}/{job['kind']}/{job['precision']}" + ("/xla" if job["jit"] else "")


def repeated(job):
  """Whether a job runs in every round: those of the ratios to the tutorial's step."""
  return job["config"] == "sat_tutorial_size" and job["kind"] in ("project", "tutorial_port")


def schedule(jobs, rounds):
  """The order jobs run in: all once, then `rounds` - 1 more rounds of the repeated ones, so
  that the runs a ratio compares are close in time (a machine's speed drifts over minutes)."""
  return jobs + [job for _ in range(rounds - 1) for job in jobs if repeated(job)]


def median_round(runs):
  """The run whose rate is the median of a job's rounds (the lower middle for an even count),
  with every round's rate added."""
  ok = [r for r in runs if "error" not in r]
  if not ok:
    return runs[0]
  chosen = sorted(ok, key=lambda r: r["train_examples_per_sec"])[(len(ok) - 1) // 2]
  return {**chosen, "round_examples_per_sec": [r["train_examples_per_sec"] for r in ok]}


def round_ratios(runs, a, b):
  """a's rate over b's in each round both ran without error."""
  return [
    x["train_examples_per_sec"] / y["train_examples_per_sec"]
    for x, y in zip(runs.get(a, []), runs.get(b, []))
    if "error" not in x and "error" not in y
  ]


def ratio(runs, a, b):
  """The median over rounds of a's rate over b's in the same round (None if none ran)."""
  ratios = round_ratios(runs, a, b)
  return statistics.median(ratios) if ratios else None
