"""The teacher-forced Show-Attend-Tell recurrence as one op with a hand-written gradient.

`ShowAttendTellDecoder.call` (without coverage) runs its T steps through `recurrence`, which
computes the same numbers as T calls of its attention, gate and LSTM cell. What it changes is
the backward pass. Autodiff of the step-by-step loop computes each weight's gradient once per
step, as T products whose inner dimension is only the batch (e.g. T x [C, B] x [B, 4D] for the
LSTM's context kernel), and then adds the T gradient tensors up. Here the backward loop only
carries what the recurrence needs (dh, dc) from step to step, keeps every step's gate and
attention gradients, and forms each weight gradient once at the end, as one product over all
T * B rows ([C, T*B] x [T*B, 4D]). The feature gradient is one batched product too.
The op also makes the large products around the loops - the attention's feature projection P,
G (below) and the words' share of the gates before the forward loop, the weight gradients after
the backward loop - so that it can run them one after another (`_in_turn`): TF would otherwise
run independent products at once, and on a 2-core CPU two of them at once take longer than one
after the other. Bias gradients (sums over rows) are products with a row of ones, several
times faster on CPU than `tf.reduce_sum` over the first axis.

The step, with h, c the previous state and P = W f + b_W the projected features [B, L, A]:
  [g_h | a | q] = h [W_h | U | w_b] + [b | b_U | b_b]    one product for every use of h
  s     = tanh(P + a)                                   [B, L, A]
  alpha = softmax_L(s v)                                float32, as `layers.AdditiveAttention`
  beta  = sigmoid(q)                                    1 without the gate
  z     = beta * alpha f                                [B, C]
  [i, f, g, o] = y_t W_e + beta alpha G + g_h          G = f W_z [B, L, 4D], once per caption
  c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) tanh(c')     (keras.layers.LSTMCell)
The context's share of the gates, z W_z = beta alpha (f W_z), is read from G, the features'
projection onto the gates computed once per caption by one large product, instead of T products
of [B, C] x [C, 4D] in the forward loop and T more for the context's gradient in the backward
loop: per step, the loops then read G (as they would read f for z) and the state products.
With L = 64 locations and T = 49 steps G costs more FLOPs than the per-step products it replaces
(L > T), but as one product it runs near the machine's peak and off the recurrence's critical
path, while the per-step products (only B rows, reading all of W_z) run slower, one after
another (docs/performance.md has the measurements). The contexts z themselves (an
output, for the deep output layer) are one batched product over all steps after the loop.
The score bias b_v shifts every location's score alike, which the softmax ignores: it changes
nothing and its gradient is zero. Inside, the recurrence is time-major ([T, B, ...]), so a step
reads and writes contiguous rows. On CPU the attention's [B, L, A] work (s, the scores and their
gradients) runs in compiled kernels (`captioning.kernels`) when the caller passes them: with
TensorFlow ops every step writes s and, backward, the gradient of P + a, [B, L, A] each, and
reads them again, where the kernels recompute the tanh from P and a and write only [B, L] and
[B, A] per step; P's and v's gradients over all steps are one pass after the backward loop.
About 1.25x faster steps at `sat_tutorial_size` (docs/performance.md). Under mixed precision
the [B, L, A] part of the attention (s, the scores and their gradients) runs in float32, like
the softmax: on CPU, bfloat16's tanh, tanh gradient and sums are several times slower than
float32's, and the loop's rounding there is not worth copying.
"""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from captioning.models import layers


def recurrence(embedded, features, h0, c0, lstm, attention, gate=None, kernels=None):
  """Runs the teacher-forced recurrence over all T steps.

  All tensors are in the compute dtype (e.g. bfloat16 under mixed precision). Pass tensors read
  from the variables (cast to the compute dtype): autodiff carries the gradients on to the
  variables, through the casts of mixed precision.

  Args:
    embedded: [B, T, E] the embedded input words.
    features: [B, L, C] image features.
    h0: [B, D] initial hidden state.
    c0: [B, D] initial cell state.
    lstm: (kernel [E + C, 4D] over [word; context], recurrent kernel [D, 4D], bias [4D]) of a
      `keras.layers.LSTMCell`, gates in its order (i, f, g, o).
    attention: (feature kernel W [C, A], feature bias b_W [A], state kernel U [D, A], state
      bias b_U [A], score kernel v [A, 1], score bias b_v [1]) of `layers.AdditiveAttention`
      (b_v has no effect: see the module docstring).
    gate: (kernel w_b [D, 1], bias b_b [1]), or None without the gate (then beta = 1).
    kernels: the compiled attention ops (`captioning.kernels.attention_ops()`) for the [B, L, A]
      work, or None for TensorFlow ops (the same numbers up to rounding). Used in float32 and
      under mixed precision (that work runs in float32), not for other dtypes.

  Returns:
    (H [B, T, D] hidden states, Z [B, T, C] gated contexts, alpha [B, T, L] attention weights
    in the features' dtype, beta [B, T] gate values).
  """
  kernel, recurrent_kernel, bias = lstm
  kernel_e, kernel_z = tf.split(kernel, [embedded.shape[-1], -1])
  gate = gate or ()
  h, z, alpha, beta = _make_fused(len(gate) > 0, kernels)(
    tf.transpose(embedded, [1, 0, 2]),  # time-major
    features,
    h0,
    c0,
    kernel_e,
    kernel_z,
    recurrent_kernel,
    bias,
    *attention,
    *gate,
  )
  batch_major = lambda x: tf.transpose(x, [1, 0, 2])
  return batch_major(h), z, batch_major(alpha), tf.transpose(beta)


def _in_turn(*thunks):
  """Runs `thunks` (each makes one large product) one after another; returns their results.

  Two large products running at once on a 2-core CPU share its cores and its cache and take
  longer than one after the other: W_z's and W's gradients at `sat_tutorial_size` took 94 ms
  together against 80 ms in turn (float32)."""
  results = []
  for thunk in thunks:
    with tf.control_dependencies(results[-1:]):
      results.append(thunk())
  return results


def _transposed(x):
  """`x` [..., K, N] with its last two axes swapped, as a new tensor [..., N, K].

  For the products of the loops, some layouts are several times slower than others on CPU
  (oneDNN): e.g. [B, K] x [N, K]^T is 3x slower than [B, K] x [K, N] in float32 for B = 64, and
  the loops take T of them. Grappler folds a plain transpose back into the product
  (`transpose_b`, `adj_y`); the detour through one more axis and a reshape keeps it a copy,
  made once.
  """
  rank = len(x.shape)
  swapped = tf.transpose(x[tf.newaxis], [*range(rank - 1), rank, rank - 1])
  shape = tf.shape(x)
  return tf.reshape(swapped, tf.concat([shape[:-2], shape[-1:], shape[-2:-1]], 0))


def _compiled_by_xla():
  """Whether the graph being traced (or one around it) is a `tf.function(jit_compile=True)`."""
  return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _make_fused(gated, kernels):
  """The custom-gradient op, with the gate or without it, with the attention kernels or not."""

  @tf.custom_gradient
  def fused(embedded, features, h0, c0, we, wz, wh, bias, wa, ba, u, bu, v, bv, *gate):
    """embedded [T, B, E] time-major -> (H [T, B, D], Z [B, T, C], alpha [T, B, L], beta
    [T, B])."""
    dtype = features.dtype
    num_steps, hidden, units = embedded.shape[0], h0.shape[-1], u.shape[-1]
    sizes = [4 * hidden, units] + ([1] if gated else [])  # the columns of [g_h | a | q]
    w_state = tf.concat([wh, u, gate[0]] if gated else [wh, u], axis=1)  # [D, 4D + A (+ 1)]
    b_state = tf.concat([bias, bu, gate[1]] if gated else [bias, bu], axis=0)
    batch, locations = tf.shape(features)[0], tf.shape(features)[1]
    rows = lambda x: tf.reshape(x, [-1, x.shape[-1]])  # [..., N] -> [rows, N]
    # The large products before the loop, one after another: the attention's feature
    # projection P = f W + b_W [B, L, A]; G = f W_z [B, L, 4D], every location's share of the
    # gates, once per caption; the words' share of the gates for all steps [T, B, 4D].
    projected, g, xe = _in_turn(
      lambda: tf.nn.bias_add(tf.matmul(rows(features), wa), ba),
      lambda: tf.matmul(rows(features), wz),
      lambda: tf.matmul(rows(embedded), we),
    )
    projected = tf.reshape(projected, [batch, locations, units])
    g_t = _transposed(tf.reshape(g, [batch, locations, -1]))  # G^T [B, 4D, L]
    xe = tf.reshape(xe, [num_steps, -1, 4 * hidden])
    # The [B, L, A] work of the attention runs in float32 under mixed precision (see above).
    wide = tf.float32 if dtype in (tf.bfloat16, tf.float16) else dtype
    projected_w, v_w = tf.cast(projected, wide), tf.cast(v, wide)
    v_row = tf.reshape(v_w, [units])
    # The compiled kernels compute the scores and their gradients from P and a without writing
    # s = tanh(P + a) or its gradient, [B, L, A] each, at every step (captioning/kernels).
    # XLA has no kernel for them: under jit_compile its own fusion takes their place.
    fused_attention = kernels if wide == tf.float32 and not _compiled_by_xla() else None
    h, c = h0, c0
    saved = []  # per step, what the backward step reads
    hs, alphas, betas = [], [], []
    for t in range(num_steps):
      g_h, a, *q = tf.split(tf.nn.bias_add(tf.matmul(h, w_state), b_state), sizes, axis=1)
      a = tf.cast(a, wide)
      if fused_attention is not None:
        scores = fused_attention.captioning_attention_scores(projected_w, a, v_row)
        kept = a  # the backward kernels recompute s from P and a
      else:
        s = tf.tanh(projected_w + a[:, tf.newaxis, :])  # [B, L, A]
        scores = tf.reshape(tf.matmul(tf.reshape(s, [-1, units]), v_w), [batch, -1])  # [B, L]
        kept = s
      alpha32 = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)
      alpha = tf.cast(alpha32, dtype)
      ag = tf.squeeze(tf.matmul(alpha[:, tf.newaxis, :], g_t, transpose_b=True), 1)  # [B, 4D]
      beta = tf.sigmoid(q[0]) if gated else None  # [B, 1]
      gates = xe[t] + (beta * ag if gated else ag) + g_h  # z W_z = beta alpha G
      sig = tf.sigmoid(gates)  # the g quarter is unused: one op beats three
      gi, gf, go = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 3 * hidden :]
      gg = tf.tanh(gates[:, 2 * hidden : 3 * hidden])
      c_prev = c
      c = gf * c + gi * gg
      tc = tf.tanh(c)
      h = go * tc
      saved.append((c_prev, gi, gf, go, gg, tc, kept, alpha32, ag, beta))
      hs.append(h)
      alphas.append(alpha)
      betas.append(beta[:, 0] if gated else tf.ones_like(alpha[:, 0]))
    hs, alphas, betas = tf.stack(hs), tf.stack(alphas), tf.stack(betas)
    alpha_b = tf.transpose(alphas, [1, 0, 2])  # [B, T, L]
    beta_b = tf.transpose(betas)[:, :, tf.newaxis]  # [B, T, 1]
    contexts = tf.matmul(alpha_b, features)  # [B, T, C], all steps in one product
    outputs = (hs, contexts * beta_b if gated else contexts, alphas, betas)

    def grad(*d_outputs):
      d_hs, d_z, d_alphas, d_betas = (
        tf.zeros_like(x) if d is None else d for d, x in zip(d_outputs, outputs)
      )
      w_state_t = _transposed(w_state)  # [4D + A (+ 1), D]
      # The Z output's share of the alpha and beta gradients, for all steps at once.
      d_context = d_z * beta_b if gated else d_z  # [B, T, C]
      d_alpha_z = tf.transpose(tf.matmul(d_context, features, transpose_b=True), [1, 0, 2])
      d_alphas = d_alphas + d_alpha_z  # [T, B, L]
      if gated:
        d_betas = d_betas + tf.transpose(tf.reduce_sum(d_z * contexts, -1))  # [T, B]
      dh = tf.zeros_like(h0)
      dc = tf.zeros_like(c0)
      d_gates_all, d_rests, d_ags, d_pres, d_vs, d_scores_all = [], [], [], [], [], []
      for t in reversed(range(num_steps)):
        c_prev, gi, gf, go, gg, tc, kept, alpha32, ag, beta = saved[t]
        dh = dh + d_hs[t]
        dc = dc + tf.raw_ops.TanhGrad(y=tc, dy=dh * go)
        d_gates = tf.concat(
          [
            tf.raw_ops.SigmoidGrad(y=gi, dy=dc * gg),
            tf.raw_ops.SigmoidGrad(y=gf, dy=dc * c_prev),
            tf.raw_ops.TanhGrad(y=gg, dy=dc * gi),
            tf.raw_ops.SigmoidGrad(y=go, dy=dh * tc),
          ],
          axis=1,
        )  # [B, 4D]
        dc = dc * gf
        d_ag = d_gates * beta if gated else d_gates  # d (alpha G)
        d_alpha = tf.squeeze(tf.matmul(d_ag[:, tf.newaxis, :], g_t), 1)  # [B, L]
        d_alpha32 = tf.cast(d_alpha + d_alphas[t], tf.float32)
        d_scores32 = alpha32 * (d_alpha32 - tf.reduce_sum(d_alpha32 * alpha32, -1, keepdims=True))
        d_scores = tf.cast(d_scores32, wide)  # [B, L]
        if fused_attention is not None:  # kept is a
          d_a = fused_attention.captioning_attention_scores_grad(projected_w, kept, v_row, d_scores)
          d_scores_all.append(d_scores)
        else:  # kept is s
          s = kept
          d_vs.append(tf.matmul(tf.reshape(d_scores, [1, -1]), tf.reshape(s, [-1, units])))
          d_pre = tf.raw_ops.TanhGrad(y=s, dy=d_scores[:, :, tf.newaxis] * v_row)  # [B, L, A]
          d_pres.append(d_pre)
          d_a = tf.reduce_sum(d_pre, axis=1)
        d_rest = [tf.cast(d_a, dtype)]  # d a [B, A]
        if gated:
          d_beta = tf.reduce_sum(d_gates * ag, -1, keepdims=True) + d_betas[t][:, tf.newaxis]
          d_rest.append(tf.raw_ops.SigmoidGrad(y=beta, dy=d_beta))  # d q [B, 1]
        d_rest = tf.concat(d_rest, axis=1) if gated else d_rest[0]
        d_gates_all.append(d_gates)
        d_rests.append(d_rest)
        d_ags.append(d_ag)
        dh = tf.matmul(tf.concat([d_gates, d_rest], axis=1), w_state_t)  # [B, D]
      # Back in time order; each weight gradient is one product over all T * B rows (L * B
      # for the feature projection's), the large ones one after another.
      d_xe = rows(tf.stack(d_gates_all[::-1]))  # [T*B, 4D]
      d_rest = rows(tf.stack(d_rests[::-1]))  # [T*B, A (+ 1)]
      h_prev = rows(tf.concat([h0[tf.newaxis], hs[:-1]], axis=0))  # [T*B, D]
      # W_z's gradient as the loop's would be, sum_t z_t^T d gates_t: fewer FLOPs than through
      # G (T*B rows, not L*B).
      z_rows = rows(tf.transpose(outputs[1], [1, 0, 2]))  # [T*B, C]
      if fused_attention is not None:  # P's and v's gradients over all steps, in one pass over P
        d_projected, d_v = fused_attention.captioning_attention_projected_grad(
          projected_w,
          tf.stack([kept for *_, kept, _, _, _ in saved]),  # a [T, B, A]
          v_row,
          tf.stack(d_scores_all[::-1]),
        )
      else:
        d_projected, d_v = tf.add_n(d_pres), tf.add_n(d_vs)  # memory-bound
      d_projected = rows(tf.cast(d_projected, dtype))  # [B*L, A]
      with tf.control_dependencies([d_projected]):  # not beside the products either
        d_wz, d_wa, d_wh, d_w_rest, d_we, d_embedded = _in_turn(
          lambda: tf.matmul(z_rows, d_xe, transpose_a=True),  # [C, 4D]
          lambda: tf.matmul(rows(features), d_projected, transpose_a=True),  # [C, A]
          lambda: tf.matmul(h_prev, d_xe, transpose_a=True),  # [D, 4D]
          lambda: tf.matmul(h_prev, d_rest, transpose_a=True),  # [D, A (+ 1)]
          lambda: tf.matmul(rows(embedded), d_xe, transpose_a=True),  # [E, 4D]
          lambda: tf.matmul(d_xe, we, transpose_b=True),  # [T*B, E]
        )
      d_bias, d_b_rest, d_ba = map(layers.column_sums, (d_xe, d_rest, d_projected))
      # The features' gradient (when needed): through the contexts, through G = f W_z with
      # d G = sum_t alpha_t^T d(alpha G)_t per image ([B, L, T] x [B, T, 4D]), and through P.
      alpha_l = tf.transpose(alphas, [1, 2, 0])  # [B, L, T]
      d_g = tf.matmul(alpha_l, tf.transpose(tf.stack(d_ags[::-1]), [1, 0, 2]))  # [B, L, 4D]
      d_features = tf.matmul(alpha_l, d_context) + tf.reshape(
        tf.matmul(rows(d_g), wz, transpose_b=True) + tf.matmul(d_projected, wa, transpose_b=True),
        tf.shape(features),
      )
      grads = [
        tf.reshape(d_embedded, tf.shape(embedded)),
        d_features,
        dh,
        dc,
        d_we,
        d_wz,
        d_wh,
        d_bias,
        d_wa,
        d_ba,
        d_w_rest[:, :units],  # d U
        d_b_rest[:units],  # d b_U
        tf.cast(tf.reshape(d_v, [units, 1]), dtype),
        tf.zeros_like(bv),
      ]
      if gated:
        grads += [d_w_rest[:, units:], d_b_rest[units:]]
      return grads

    return outputs, grad

  return fused
