"""Compiled CPU kernels, built on first use against the installed TensorFlow.

`attention_ops.cc` fuses the additive attention's per-step [B, L, A] work of the teacher-forced
Show-Attend-Tell recurrence (`models.sat_recurrence`), which TensorFlow's own ops do as several
passes over memory. The first process that needs it compiles it with the machine's C++ compiler
(`$CXX`, else `c++` or `g++`; about 10 s) into a cache folder
(`$CAPTIONING_KERNEL_CACHE`, else `$XDG_CACHE_HOME/captioning/kernels`, else
`~/.cache/captioning/kernels`), named by a hash of the source, the TensorFlow version, the
compiler and the CPU, so that a change of any of them builds it again; later processes load the
cached library. Where it cannot be built or loaded (no compiler, a TensorFlow without headers),
`attention_ops()` logs why, once, and returns None, and the recurrence uses TensorFlow ops: the
same numbers up to rounding, slower. The kernels run on CPU only, so `cpu_attention_ops()` also
returns None when TensorFlow sees a GPU.
"""

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from absl import logging
import tensorflow as tf

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention_ops.cc")
# Tried in order: the machine's own instruction set (without AVX512-FP16, whose half-precision
# header in TensorFlow's Eigen GCC 12 cannot compile), then the same without that flag (for
# compilers that do not know it), then the compiler's default target.
_ARCH_FLAGS = (("-march=native", "-mno-avx512fp16"), ("-march=native",), ())


class BuildError(RuntimeError):
  """The kernels could not be compiled or loaded; the message says why."""


def cache_dir():
  """The folder that holds built kernels."""
  explicit = os.environ.get("CAPTIONING_KERNEL_CACHE")
  if explicit:
    return explicit
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "captioning", "kernels")


def _compiler():
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if not compiler:
    raise BuildError("no C++ compiler found (set CXX, or install g++)")
  return compiler


def _cpu_description():
  """The CPU's model and instruction-set flags (what -march=native compiles for)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor()


def build(source=SOURCE, output_dir=None):
  """Compiles `source` into a shared library in the cache (unless built before); returns its path.

  Raises:
    BuildError: no compiler, or every set of flags failed (the message has the compiler's last
      lines).
  """
  compiler = _compiler()
  with open(source, "rb") as f:
    code = f.read()
  tf_flags = [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
  key = hashlib.sha256(
    b"\0".join(
      s.encode() if isinstance(s, str) else s
      for s in (code, tf.__version__, compiler, " ".join(tf_flags), _cpu_description())
    )
  ).hexdigest()[:16]
  name = os.path.splitext(os.path.basename(source))[0]
  output_dir = os.path.join(output_dir or cache_dir(), key)
  library = os.path.join(output_dir, name + ".so")
  if os.path.exists(library):
    return library
  os.makedirs(output_dir, exist_ok=True)
  errors = ""
  for arch in _ARCH_FLAGS:
    # Built under a temporary name and renamed: processes that build at once never load a
    # half-written library.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=output_dir)
    os.close(fd)
    command = [compiler, "-shared", "-fPIC", "-O3", *arch, "-w", source, "-o", partial, *tf_flags]
    try:
      result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
      os.remove(partial)
      raise BuildError(f"{compiler} failed to run: {e}") from e
    if result.returncode == 0:
      os.replace(partial, library)
      return library
    os.remove(partial)
    errors = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
  raise BuildError(f"{compiler} could not compile {source}:\n{errors}")


@functools.cache
def attention_ops():
  """The attention kernels' op module (built and loaded once per process), or None."""
  try:
    library = build()
    try:
      return tf.load_op_library(library)
    except (tf.errors.NotFoundError, OSError) as e:
      raise BuildError(f"could not load {library}: {e}") from e
  except BuildError as e:
    logging.warning(
      "The fused attention kernels are not available, the SAT recurrence runs on TensorFlow "
      "ops (slower, same numbers up to rounding): %s",
      e,
    )
    return None


def cpu_attention_ops():
  """`attention_ops()` where TensorFlow sees no GPU (the kernels are CPU only), else None."""
  if tf.config.list_logical_devices("GPU"):
    return None
  return attention_ops()
