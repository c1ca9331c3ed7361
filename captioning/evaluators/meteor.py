"""pycocoevalcap's METEOR JVM, started, run and stopped so that a failure costs only METEOR.

pycocoevalcap's `Meteor` runs meteor-1.5.jar as a long-lived Java subprocess and scores through
its stdin and stdout. `FastStartMeteor` runs the same jar with the same arguments, so the scores
are the same, and one JVM option more: the parallel garbage collector. Most of METEOR's time on
an evaluation split is the JVM loading its paraphrase table, and Java's default collector (G1)
makes that slow on small machines: scoring 200 captions took 7-11 s with it and 4.5-5.5 s with
the parallel collector on 2 CPU cores (the slower figures in a process that had run TensorFlow).
"""

import collections
import contextlib
import os
import shutil
import subprocess
import threading

from pycocoevalcap.meteor import meteor as pycocoevalcap_meteor

NEEDS_JAVA = "METEOR needs Java (install a JRE, e.g. `apt-get install default-jre-headless`)"
# Options for the JVM only: they change how fast METEOR starts, never what it computes.
JVM_OPTIONS = ("-XX:+UseParallelGC",)


class FastStartMeteor(pycocoevalcap_meteor.Meteor):
  """pycocoevalcap's `Meteor` (pinned at 1.2), its JVM started with `JVM_OPTIONS`."""

  def __init__(self):  # pylint: disable=super-init-not-called
    # pycocoevalcap 1.2's command, with JVM_OPTIONS before `-jar`; its __init__ would start the
    # JVM without them. tests/evaluators/test_meteor.py compares the two commands.
    self.meteor_cmd = [
      "java",
      *JVM_OPTIONS,
      "-jar",
      "-Xmx2G",
      pycocoevalcap_meteor.METEOR_JAR,
      "-",
      "-",
      "-stdio",
      "-l",
      "en",
      "-norm",
    ]
    self.meteor_p = subprocess.Popen(
      self.meteor_cmd,
      cwd=os.path.dirname(os.path.abspath(pycocoevalcap_meteor.__file__)),
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
    self.lock = threading.Lock()  # as in pycocoevalcap: compute_score holds it


def start():
  """Starts the METEOR JVM; returns (meteor, None) or (None, error message).

  The JVM loads its tables in the background: start it before other work to overlap the two.
  """
  # Checked first because a Meteor whose Popen failed also fails noisily in its __del__.
  if shutil.which("java") is None:
    return None, NEEDS_JAVA
  try:
    meteor = FastStartMeteor()
  except Exception as e:  # pylint: disable=broad-except
    return None, f"could not start METEOR ({type(e).__name__}: {e})"
  # Nothing else reads the JVM's stderr: draining it keeps a chatty JVM from blocking on a full
  # pipe, and its last lines explain a crash.
  stderr_tail = collections.deque(maxlen=20)
  drain = threading.Thread(target=_drain, args=(meteor.meteor_p.stderr, stderr_tail), daemon=True)
  drain.start()
  meteor.stderr_tail, meteor.stderr_drain = stderr_tail, drain
  return meteor, None


def _drain(stream, tail):
  """Reads `stream` to its end, keeping the last lines in `tail`."""
  try:
    for line in iter(stream.readline, b""):
      tail.append(line.decode(errors="replace").rstrip())
  except (OSError, ValueError):  # The stream was closed under us.
    pass


def run(meteor, gts, res, timeout_s):
  """Computes METEOR and closes the JVM; returns (score, per-image scores, None) or
  (None, None, error)."""
  timed_out = threading.Event()

  def kill():
    timed_out.set()
    meteor.meteor_p.kill()

  timer = threading.Timer(timeout_s, kill) if timeout_s is not None else None
  if timer is not None:
    timer.daemon = True
    timer.start()
  try:
    score, each = meteor.compute_score(gts, res)
    return float(score), [float(x) for x in each], None
  except Exception as e:  # pylint: disable=broad-except
    if timed_out.is_set():
      return None, None, f"METEOR did not answer within {timeout_s:g} s and was killed"
    error = f"METEOR failed ({type(e).__name__}: {e})"
    details = close(meteor)
    return None, None, f"{error}; Java said: {details}" if details else error
  finally:
    if timer is not None:
      timer.cancel()
    close(meteor)


def close(meteor):
  """Stops the METEOR JVM now and returns the tail of its stderr.

  Meteor only stops its JVM (started with -Xmx2G) in `__del__`, i.e. whenever garbage collection
  gets to it; this does the same work deterministically. Safe to call more than once.
  """
  # Meteor.compute_score holds its lock without try/finally, so an exception leaves it locked and
  # Meteor.__del__ would then block forever on it at garbage collection.
  if meteor.lock.locked():
    meteor.lock.release()
  process = meteor.meteor_p
  with contextlib.suppress(OSError):  # The JVM died with unread input in the pipe.
    process.stdin.close()
  if process.poll() is None:
    process.kill()
  process.wait()
  meteor.stderr_drain.join(timeout=5)
  process.stdout.close()
  process.stderr.close()
  return " | ".join(line for line in meteor.stderr_tail if line)[-500:]
