"""Process settings belong to entry points, and importing the package changes nothing."""

import json
import os
import subprocess
import sys

import pytest

from captioning import runtime
import helpers

# Importing the package (and its pure-Python scorers) neither sets process settings nor loads
# TensorFlow.
_IMPORT_PROBE = """
import json, os, sys
before = dict(os.environ)
import captioning
import captioning.evaluators.coco_metrics
import captioning.data.shapes.facts
print(json.dumps({"changed": sorted(k for k in os.environ if os.environ.get(k) != before.get(k)),
                  "tensorflow": "tensorflow" in sys.modules}))
"""

# With the entry points' setup, TensorFlow's CPU allocator is the BFC allocator: the only CPU
# allocator that counts the bytes it hands out, so a 64 MB tensor shows in its peak.
_ALLOCATOR_PROBE = """
import tensorflow as tf
from captioning import runtime
runtime.setup_process()
tf.zeros([16, 1024, 1024]).numpy()
print(tf.config.experimental.get_memory_info("CPU:0")["peak"])
"""


def _python(code, env_value=None):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
  if env_value is not None:
    env["TF_CPU_ALLOCATOR_USE_BFC"] = env_value
  env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=helpers.ROOT)
  result = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.split()[-1]


def test_importing_the_package_has_no_side_effects():
  env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
  env["PYTHONPATH"] = helpers.ROOT
  result = subprocess.run(
    [sys.executable, "-c", _IMPORT_PROBE], env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout) == {"changed": [], "tensorflow": False}


def test_entry_point_setup_selects_the_bfc_allocator_after_tensorflow_is_imported():
  assert int(_python(_ALLOCATOR_PROBE)) >= 64 * 1024 * 1024


def test_setup_keeps_a_setting_the_user_made(monkeypatch):
  monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "false")
  assert runtime.setup_process() == {"TF_CPU_ALLOCATOR_USE_BFC": "false"}
  monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC")
  assert runtime.setup_process() == {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
  assert os.environ["TF_CPU_ALLOCATOR_USE_BFC"] == "true"


def test_the_test_suite_runs_with_the_entry_point_settings():
  for name, value in runtime.PROCESS_SETTINGS.items():
    assert os.environ[name] == value


def test_provenance_names_the_code_and_the_versions():
  record = runtime.provenance()
  for key in ("git_revision", "python", "tensorflow", "keras", "numpy", "environment"):
    assert key in record
  assert record["environment"] == {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
  # In a git checkout (a clean clone in CI) the revision is recorded; elsewhere it is None.
  revision, dirty = runtime.git_revision(helpers.ROOT)
  if os.path.exists(os.path.join(helpers.ROOT, ".git")):
    assert len(revision) == 40 and int(revision, 16) >= 0 and dirty in (True, False)
    assert record["git_revision"] == revision
  else:
    assert revision is None and record["git_revision"] is None


def test_cpuinfo_reads_a_fields_first_line_and_nothing_for_a_missing_one():
  if not os.path.exists("/proc/cpuinfo"):
    pytest.skip("no /proc/cpuinfo on this system")
  assert runtime.cpuinfo("processor") == "0"  # the first CPU's line
  assert runtime.cpuinfo("no such field") == ""
