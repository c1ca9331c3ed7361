"""The machine's dense matmul peak, measured the way MFU needs it: never understated.

`tf.matmul` of square matrices (2048, 3072 and 4096 a side) inside a `tf.function`, warmed up,
each size repeated in runs of at least `min_seconds`, the best run of all kept. (numpy's matmul
is never faster on these machines and often half as fast, so it is not used.)
"""

import platform
import time

import tensorflow as tf

from captioning import runtime

SIZES = (2048, 3072, 4096)


def cpu_flags():
  """The CPU's matrix-relevant feature flags from /proc/cpuinfo (empty where there is none)."""
  wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
  present = set(runtime.cpuinfo("flags").split())
  return [flag for flag in wanted if flag in present]


def cpu_model():
  """The CPU's model name from /proc/cpuinfo, else what `platform` knows ("" if nothing)."""
  return runtime.cpuinfo("model name") or platform.processor()


def matmul_peak(dtype="float32", sizes=SIZES, repeats=3, min_seconds=0.5):
  """{"gflops", "size", "dtype", "runs"}: the best FLOP rate of `tf.matmul` over `sizes`.

  Args:
    dtype: "float32" or "bfloat16".
    sizes: square matrix sides.
    repeats: timed runs per size.
    min_seconds: each run multiplies until at least this long has passed.
  """
  best, runs = (0.0, None), []
  for n in sizes:
    a = tf.random.stateless_normal([n, n], seed=[0, 1], dtype=tf.float32)
    b = tf.random.stateless_normal([n, n], seed=[0, 2], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def chain(a, b, count):
      # `count` products one after another (each depends on the last), so none is skipped.
      def body(i, x):
        return i + 1, tf.matmul(a, x) * tf.constant(1e-3, x.dtype)

      return tf.while_loop(lambda i, x: i < count, body, (tf.constant(0), b))[1]

    chain(a, b, tf.constant(2)).numpy()  # trace and warm up
    count = 1
    while True:  # enough products for one run to last min_seconds
      start = time.perf_counter()
      chain(a, b, tf.constant(count)).numpy()
      seconds = time.perf_counter() - start
      if seconds >= min_seconds:
        break
      count = max(count * 2, int(count * min_seconds * 1.2 / max(seconds, 1e-6)))
    for _ in range(repeats):
      while True:  # a run shorter than min_seconds (the machine sped up) runs again, longer
        start = time.perf_counter()
        chain(a, b, tf.constant(count)).numpy()
        seconds = time.perf_counter() - start
        if seconds >= min_seconds:
          break
        count *= 2
      rate = 2 * n**3 * count / seconds / 1e9
      runs.append({"size": n, "products": count, "seconds": seconds, "gflops": rate})
      if rate > best[0]:
        best = (rate, n)
  return {"gflops": best[0], "size": best[1], "dtype": dtype, "runs": runs}
