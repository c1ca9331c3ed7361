"""Shared test set-up: the process settings of every entry point, quiet TensorFlow, the
repository root importable for configs, and the order and threads of a run with two workers."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
  sys.path.insert(0, TESTS)  # for `import helpers`

from captioning import runtime  # noqa: E402  (needs ROOT on the path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The compiled kernels (captioning/kernels) are built once per run of the suite, in a folder of
# its own that the workers and the scripts the tests start share, not in the user's cache.
os.environ.setdefault(
  "CAPTIONING_KERNEL_CACHE", os.path.join(ROOT, ".pytest_cache", "captioning-kernels")
)
runtime.setup_process()  # the test suite is an entry point too (the BFC allocator)

if os.environ.get("PYTEST_XDIST_WORKER"):
  # `make test` runs the suite in two worker processes: on 2 cores, one thread of TensorFlow ops
  # each, or the two would share both cores and switch threads on every small op.
  import tensorflow as tf

  _THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS)
  tf.config.threading.set_inter_op_parallelism_threads(_THREADS)


def pytest_collection_modifyitems(items):
  """Tests marked slow (the learning tests' training) first: with two workers that keep the
  collected order (`make test`), each starts on a long file and the rest fills in around them."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
