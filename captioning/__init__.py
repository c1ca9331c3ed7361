"""captioning: attention image captioners on TensorFlow 2 and Keras 3.

Importing the package makes TensorFlow's CPU allocator the BFC allocator, by setting
`TF_CPU_ALLOCATOR_USE_BFC=true` unless that variable is already set. TensorFlow's default CPU
allocator hands every large buffer back to the operating system when it is freed; the unrolled
decoder allocates thousands of such buffers per train step, so with it a third or more of the
CPU time goes to the kernel mapping and zeroing pages. The BFC allocator keeps freed memory for
reuse, and the default training run takes about a quarter less time on 2 CPU cores
(docs/results.md). TensorFlow reads the variable when it creates its first CPU device, so the
import only has to come before the first TensorFlow op. `TF_CPU_ALLOCATOR_USE_BFC=false` keeps
the default allocator. GPU memory is unaffected.
"""

import os

os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
