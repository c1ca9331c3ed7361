"""AdamW with one fused update per variable.

`keras.optimizers.AdamW` updates each variable with about ten elementwise ops (the two moments,
the bias-corrected step, the division), each a pass over the variable's memory. `FusedAdamW`
is the same optimizer (the same variables, slots, schedule, weight decay, checkpoints and
numbers up to rounding) whose dense update is TF's fused `ResourceApplyAdam` kernel: one pass.
Sparse gradients, AMSGrad and other backends fall back to Keras's update.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="captioning")
class FusedAdamW(keras.optimizers.AdamW):
  """`keras.optimizers.AdamW` whose dense update is TF's fused Adam kernel.

  The kernel computes Keras's update: m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2);
  var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon). Weight decay is
  applied by Keras before it, as in AdamW.
  """

  def update_step(self, gradient, variable, learning_rate):
    if (
      self.amsgrad
      or keras.backend.backend() != "tensorflow"
      or isinstance(gradient, tf.IndexedSlices)
    ):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    index = self._get_variable_index(variable)
    handle = lambda v: (v.value if isinstance(v, keras.Variable) else v).handle
    tf.raw_ops.ResourceApplyAdam(
      var=handle(variable),
      m=handle(self._momentums[index]),
      v=handle(self._velocities[index]),
      beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
      beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
      lr=tf.cast(learning_rate, dtype),
      beta1=tf.cast(self.beta_1, dtype),
      beta2=tf.cast(self.beta_2, dtype),
      epsilon=tf.cast(self.epsilon, dtype),
      grad=tf.cast(gradient, dtype),
    )
