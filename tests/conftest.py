"""Shared test set-up: the process settings of every entry point, quiet TensorFlow, and the
repository root importable for configs."""

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
runtime.setup_process()  # the test suite is an entry point too (the BFC allocator)
