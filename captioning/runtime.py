"""Process settings and provenance, for entry points (scripts, benchmarks, the test suite).

Library modules never change process settings on import; each entry point calls
`setup_process()` first thing, before TensorFlow runs its first op.
"""

import os
import platform
import subprocess
import sys

# TensorFlow's default CPU allocator hands every large buffer back to the operating system when
# it is freed; the unrolled decoder allocates thousands of such buffers per train step, so a
# third or more of the CPU time went to the kernel mapping and zeroing pages. The BFC allocator
# keeps freed memory for reuse: the default training run takes about a quarter less time on
# 2 CPU cores (docs/results.md). GPU memory is unaffected.
PROCESS_SETTINGS = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}


def setup_process(deterministic=False):
  """Applies `PROCESS_SETTINGS` to this process's environment, keeping values already set.

  TensorFlow reads the allocator setting when it creates its first CPU device, i.e. at the first
  op, so this works after `import tensorflow` as long as no op has run.

  Args:
    deterministic: turn TensorFlow's op determinism on (`config.train.deterministic`): every op
      then gives the same result on the same input, on GPUs too (where some are slower, and an
      op without a deterministic kernel raises an error rather than differ).

  Returns:
    The settings now in force, {name: value}.
  """
  for name, value in PROCESS_SETTINGS.items():
    os.environ.setdefault(name, value)
  if deterministic:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.experimental.enable_op_determinism()
  return {name: os.environ[name] for name in PROCESS_SETTINGS}


def cpuinfo(field):
  """The value of `field` on /proc/cpuinfo's first line for it ("" where there is none)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == field:
          return value.strip()
  except OSError:
    pass
  return ""


def git_revision(path=None):
  """(commit, has uncommitted changes) of the git checkout holding `path`, or (None, None)."""
  path = path or os.path.dirname(os.path.abspath(__file__))

  def git(*args):
    return subprocess.run(
      ["git", "-C", path, *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()

  try:
    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return None, None


def provenance():
  """What a result depends on beyond its config: code revision, versions, process settings."""
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  revision, dirty = git_revision()
  return {
    "git_revision": revision,
    "git_uncommitted_changes": dirty,
    "python": sys.version.split()[0],
    "tensorflow": tf.__version__,
    "keras": keras.__version__,
    "numpy": np.__version__,
    "platform": platform.platform(),
    "cpu_count": os.cpu_count(),
    "devices": [d.name for d in tf.config.list_logical_devices()],
    "environment": {name: os.environ.get(name) for name in PROCESS_SETTINGS},
  }
