"""Compiled CPU kernels, built on first use against the installed TensorFlow.

`attention_ops.cc` fuses the additive attention's per-step [B, L, A] work of the teacher-forced
Show-Attend-Tell recurrence (`models.sat_recurrence`), which TensorFlow's own ops do as several
passes over memory. The first process that needs it compiles it with the machine's C++ compiler
(`$CXX`, else `c++` or `g++`; about 10 s) into a cache folder
(`$CAPTIONING_KERNEL_CACHE`, else `$XDG_CACHE_HOME/captioning/kernels`, else
`~/.cache/captioning/kernels`), named by a hash of the source, the TensorFlow version, the
compiler and the CPU, so that a change of any of them builds it again; later processes load the
cached library. The build happens where the decoder first traces its training pass, so the
first step of a new install takes those seconds longer. Where the kernels cannot be built or
loaded (no compiler, a TensorFlow without headers, a cache folder that cannot be written),
`attention_ops()` logs why, once, and returns None, and the recurrence uses TensorFlow ops: the
same numbers up to rounding, slower. The kernels run on CPU only, so `cpu_attention_ops()` also
returns None when TensorFlow sees a GPU.
"""

import contextlib
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading

from absl import logging
import tensorflow as tf

from captioning import runtime

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention_ops.cc")
# Tried in order: the machine's own instruction set (without AVX512-FP16, whose half-precision
# header in TensorFlow's Eigen GCC 12 cannot compile), then the same without that flag (for
# compilers that do not know it), then the compiler's default target.
_ARCH_FLAGS = (("-march=native", "-mno-avx512fp16"), ("-march=native",), ())


class BuildError(RuntimeError):
  """The kernels could not be compiled or loaded; the message says why."""


def cache_dir():
  """Returns the folder that holds built kernels (see the module docstring)."""
  explicit = os.environ.get("CAPTIONING_KERNEL_CACHE")
  if explicit:
    return explicit
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "captioning", "kernels")


def _compiler():
  """Returns the compiler's command (`$CXX` may hold a wrapper, e.g. "ccache g++") and the
  first line of its `--version`, which the cache key includes."""
  command = shlex.split(os.environ.get("CXX", "")) or [shutil.which("c++") or shutil.which("g++")]
  if not command[0]:
    raise BuildError("no C++ compiler found (set CXX, or install g++)")
  version = _run([*command, "--version"], timeout=60).stdout
  return command, (version.splitlines() or [""])[0]


def _run(command, timeout):
  try:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise BuildError(f"{command[0]} failed to run: {e}") from e


def _cpu_description():
  """The CPU's model and instruction-set flags (what -march=native compiles for)."""
  fields = ("model name", "flags", "Features")  # Features: the flags on ARM
  return "\n".join(runtime.cpuinfo(field) for field in fields).strip() or platform.processor()


def _errors(result, lines=3):
  """The compiler's first error lines (its last lines are usually notes), else its last ones."""
  output = (result.stderr or result.stdout).strip().splitlines()
  errors = [line for line in output if "error" in line.lower()]
  return "\n".join(errors[:lines] or output[-lines:])


def build(source=SOURCE, output_dir=None):
  """Compiles `source` into a shared library in the cache unless it is there.

  Args:
    source: a C++ file of TensorFlow ops.
    output_dir: the cache folder (default `cache_dir()`); the library goes into a subfolder
      named by a hash of the source, the TensorFlow version and flags, the compiler and the CPU.

  Returns:
    The library's path.

  Raises:
    BuildError: no compiler, or it failed with every set of flags (the message has its first
      error lines for each).
    OSError: the source cannot be read or the cache folder cannot be written.
  """
  command, version = _compiler()
  with open(source, "rb") as f:
    code = f.read()
  tf_flags = [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
  parts = (code, tf.__version__, " ".join(command), version, " ".join(tf_flags), _cpu_description())
  key = hashlib.sha256(
    b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)
  ).hexdigest()[:16]
  name = os.path.splitext(os.path.basename(source))[0]
  output_dir = os.path.join(output_dir or cache_dir(), key)
  library = os.path.join(output_dir, name + ".so")
  if os.path.exists(library):
    return library
  os.makedirs(output_dir, exist_ok=True)
  failures = []
  for arch in _ARCH_FLAGS:
    # Built under a temporary name and renamed: processes that build at once never load a
    # half-written library.
    fd, partial = tempfile.mkstemp(suffix=".partial", dir=output_dir)
    os.close(fd)
    try:
      result = _run(
        [*command, "-shared", "-fPIC", "-O3", *arch, "-w", source, "-o", partial, *tf_flags],
        timeout=600,
      )
      if result.returncode == 0:
        os.replace(partial, library)
        return library
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(partial)  # the linker may have removed it already
    failures.append(f"with flags {' '.join(arch) or '(none)'}:\n{_errors(result)}")
  raise BuildError(f"{command[0]} could not compile {source}\n" + "\n".join(failures))


def _load_library(library):
  try:
    return tf.load_op_library(library)
  except (tf.errors.OpError, OSError) as e:
    raise BuildError(f"could not load {library}: {e}") from e


def load(source=SOURCE, output_dir=None):
  """Builds `source` (see `build`) and loads it; returns its op module.

  A cached library that does not load (e.g. a file cut short) is built again, once.

  Raises:
    BuildError, OSError: as `build`, or the library does not load.
  """
  library = build(source, output_dir)
  try:
    return _load_library(library)
  except BuildError as e:
    logging.warning("%s; building it again", e)
    with contextlib.suppress(FileNotFoundError):
      os.remove(library)
    return _load_library(build(source, output_dir))


_lock = threading.Lock()  # one build at a time in a process (e.g. replicas' threads)


def attention_ops():
  """The attention kernels' op module (built and loaded once per process), or None."""
  with _lock:
    return _attention_ops()


@functools.cache
def _attention_ops():
  try:
    return load()
  except (BuildError, OSError) as e:
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
