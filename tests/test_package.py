"""Tests of what importing the package sets up: the BFC CPU allocator."""

import os
import subprocess
import sys

import helpers

# Only TensorFlow's BFC allocator keeps statistics; the default CPU allocator raises.
_PROBE = """
import tensorflow as tf
import captioning
tf.matmul(tf.ones([64, 64]), tf.ones([64, 64]))
try:
  tf.config.experimental.get_memory_info("CPU:0")
  print("bfc")
except ValueError:
  print("default")
"""


def _allocator(env_value):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
  if env_value is not None:
    env["TF_CPU_ALLOCATOR_USE_BFC"] = env_value
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  result = subprocess.run(
    [sys.executable, "-c", _PROBE],
    cwd=helpers.ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  return result.stdout.split()[-1]


def test_import_selects_the_bfc_allocator_even_after_tensorflow():
  # The probe imports TensorFlow first, as notebooks and other libraries do.
  assert _allocator(None) == "bfc"


def test_an_explicit_setting_is_respected():
  assert _allocator("false") == "default"


def test_the_test_suite_itself_runs_with_it():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  tf.matmul(tf.ones([8, 8]), tf.ones([8, 8]))
  assert tf.config.experimental.get_memory_info("CPU:0")["peak"] > 0
