"""Independent numpy oracle for rnnc.

Written straight from the published equations (TF1 ``rnn_cell_impl.py`` / ``rnn.py``,
the ONNX operator definitions, PyTorch's ``torch.nn`` / ``torch.optim`` docs), and on
purpose *not* from rnnc's own code, so that a wrong equation in the compiler cannot
agree with itself.  Plain numpy only; every function computes in the float dtype of its
inputs (float32 in -> float32 out, float64 in -> float64 out), except the optimizers,
``numeric_grad`` and the schedules, which work in float64.

Conventions (rnnc's parameter layout):

* sequences are batch-major: ``x[batch, time, features]``;
* weights multiply on the right: ``x @ W``;
* gate blocks are concatenated along the LAST axis of ``W``, ``U`` and ``b`` in the order
  stated for each cell (LSTM: i, j, f, o — TF1's order; GRU: r, z, candidate).

A "step" for :func:`run` is a function ``step(x_t, state) -> (output_t, new_state)``;
``state`` is an array (basic, GRU, MGU), a tuple ``(c, h)`` (LSTM) or any nesting of
tuples / lists of arrays.  :func:`basic_cell`, :func:`lstm_cell`, :func:`gru_cell` and
:func:`mgu_cell` turn parameters into such steps.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = [
    # elementwise
    "sigmoid",
    # cell steps
    "basic_step",
    "lstm_step",
    "gru_step",
    "mgu_step",
    # step adapters for run()
    "basic_cell",
    "lstm_cell",
    "gru_cell",
    "mgu_cell",
    # running over time
    "reverse_sequence",
    "sequence_mask",
    "run",
    "stack_run",
    "bi_run",
    "project",
    "residual",
    "final_tensor",
    # dense / losses / metrics
    "dense",
    "softmax",
    "log_softmax",
    "mse",
    "softmax_cross_entropy",
    "accuracy",
    # optimizers
    "sgd",
    "adam",
    "adamw",
    "clip_by_global_norm",
    # schedules
    "exponential",
    "step_schedule",
    "cosine",
    # misc
    "numeric_grad",
    "tbptt_windows",
]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def sigmoid(z):
    """Logistic function 1 / (1 + exp(-z)), overflow-free, in z's dtype."""
    z = np.asarray(z)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _split(a, k):
    """Split the last axis of ``a`` into ``k`` equal gate blocks."""
    n = a.shape[-1]
    if n % k:
        raise ValueError(f"last axis {n} is not divisible into {k} gate blocks")
    return np.split(a, k, axis=-1)


def _act(name):
    if name == "tanh":
        return np.tanh
    if name == "relu":
        return lambda z: np.maximum(z, np.zeros((), dtype=np.asarray(z).dtype))
    raise ValueError(f"unknown activation {name!r} (tanh or relu)")


def _tree_map(fn, *trees):
    """Apply ``fn`` leafwise over matching nests of tuples / lists of arrays."""
    t0 = trees[0]
    if isinstance(t0, (tuple, list)):
        for t in trees[1:]:
            if not isinstance(t, (tuple, list)) or len(t) != len(t0):
                raise ValueError("state structures do not match")
        mapped = [_tree_map(fn, *parts) for parts in zip(*trees)]
        return tuple(mapped) if isinstance(t0, tuple) else list(mapped)
    return fn(*trees)


def _lengths(lengths, batch, time):
    if lengths is None:
        return np.full((batch,), time, dtype=np.int64)
    n = np.asarray(lengths).astype(np.int64).reshape(-1)
    if n.shape != (batch,):
        raise ValueError(f"lengths must have shape [{batch}], got {np.shape(lengths)}")
    if (n < 0).any() or (n > time).any():
        raise ValueError(f"lengths must lie in [0, {time}], got {n.tolist()}")
    return n


def sequence_mask(lengths, time, dtype=np.float64):
    """mask[b, t] = 1 where t < lengths[b], else 0 (tf.sequence_mask)."""
    n = np.asarray(lengths).astype(np.int64).reshape(-1)
    return (np.arange(time)[None, :] < n[:, None]).astype(dtype)


def _zero_past(outputs, lengths):
    """Zero outputs[b, t, ...] for t >= lengths[b] (keeps dtype)."""
    if lengths is None:
        return outputs
    b, t = outputs.shape[:2]
    n = _lengths(lengths, b, t)
    m = (np.arange(t)[None, :] < n[:, None]).reshape((b, t) + (1,) * (outputs.ndim - 2))
    return np.where(m, outputs, np.zeros((), dtype=outputs.dtype))


# --------------------------------------------------------------------------------------
# cell steps (one time step, batch-major rows)
# --------------------------------------------------------------------------------------


def basic_step(x, h, W, U, b, activation="tanh"):
    """Basic (Elman) RNN cell, TF1 ``BasicRNNCell``:  h' = act(x W + h U + b).

    x[B, I], h[B, H], W[I, H], U[H, H], b[H]; activation "tanh" (default) or "relu".
    """
    return _act(activation)(x @ W + h @ U + b)


def lstm_step(x, state, W, U, b, forget_bias=1.0, wi=None, wf=None, wo=None, P=None,
              clip=None, proj_clip=None):
    """One step of TF1 ``tf.nn.rnn_cell.LSTMCell``; returns the new state ``(c, m)``.

    Source: tensorflow/tensorflow, tensorflow/python/ops/rnn_cell_impl.py,
    ``LSTMCell.call``::

        lstm_matrix = matmul(concat([inputs, m_prev], 1), self._kernel) + bias
        i, j, f, o = split(lstm_matrix, 4, axis=1)
        c = sigmoid(f + forget_bias + w_f_diag * c_prev) * c_prev
            + sigmoid(i + w_i_diag * c_prev) * activation(j)      # peepholes optional
        c = clip_by_value(c, -cell_clip, cell_clip)               # if cell_clip
        m = sigmoid(o + w_o_diag * c) * activation(c)             # NEW c in o's peephole
        m = matmul(m, proj_kernel)                                # if num_proj
        m = clip_by_value(m, -proj_clip, proj_clip)               # if proj_clip

    rnnc layout: the TF1 kernel ``[I+R, 4H]`` is split by rows into ``W[I, 4H]`` (input)
    and ``U[R, 4H]`` (recurrent; R = H, or P with projection), ``b[4H]``; gate blocks
    along the last axis in TF1's order **i, j (candidate), f, o**.

      i  = σ(x W_i + h U_i + b_i + wi ⊙ c_prev)
      f  = σ(x W_f + h U_f + b_f + forget_bias + wf ⊙ c_prev)
      c  = f ⊙ c_prev + i ⊙ tanh(x W_j + h U_j + b_j)
      c  = clip(c, -clip, clip)                 if clip is not None
      o  = σ(x W_o + h U_o + b_o + wo ⊙ c)      (peephole on the new c)
      m  = o ⊙ tanh(c);  m = m @ P if P is given; m = clip(m, ±proj_clip) if given

    ``forget_bias`` is a constant ADDED to the forget pre-activation at every step (not an
    initializer).  Peepholes wi/wf/wo[H] are each optional (None = no peephole term).
    state = (c[B, H], h[B, R]); returns (c, m) with m[B, P if P is not None else H].
    """
    c_prev, h_prev = state
    z = x @ W + h_prev @ U + b
    zi, zj, zf, zo = _split(z, 4)
    dt = z.dtype
    if wi is not None:
        zi = zi + wi * c_prev
    zf = zf + np.asarray(forget_bias, dtype=dt)
    if wf is not None:
        zf = zf + wf * c_prev
    c = sigmoid(zf) * c_prev + sigmoid(zi) * np.tanh(zj)
    if clip is not None:
        c = np.clip(c, -clip, clip).astype(dt, copy=False)
    if wo is not None:
        zo = zo + wo * c
    m = sigmoid(zo) * np.tanh(c)
    if P is not None:
        m = m @ P
    if proj_clip is not None:
        m = np.clip(m, -proj_clip, proj_clip).astype(dt, copy=False)
    return c, m


def gru_step(x, h, W, U, b, reset_after=False, bU=None):
    """One GRU step; W[I, 3H], U[H, 3H], b[3H] with gate blocks **r, z, candidate**.

    reset_after=False — TF1 ``GRUCell`` (rnn_cell_impl.py ``GRUCell.call``; TF calls z "u"),
    = ONNX GRU linear_before_reset=0, = Keras reset_after=False:

      r  = σ(x W_r + h U_r + b_r)
      z  = σ(x W_z + h U_z + b_z)
      h̃  = tanh(x W_h + (r ⊙ h) U_h + b_h)
      h' = z ⊙ h + (1 − z) ⊙ h̃

    reset_after=True — PyTorch ``nn.GRU`` / Keras default / cuDNN, = ONNX
    linear_before_reset=1, with an extra recurrent bias bU[3H] (None = zeros):

      r  = σ(x W_r + b_r + h U_r + bU_r)
      z  = σ(x W_z + b_z + h U_z + bU_z)
      h̃  = tanh(x W_h + b_h + r ⊙ (h U_h + bU_h))
      h' = z ⊙ h + (1 − z) ⊙ h̃

    (PyTorch: n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.)
    """
    xr, xz, xh = _split(x @ W + b, 3)
    Ur, Uz, Uh = _split(U, 3)
    if not reset_after:
        if bU is not None:
            raise ValueError("bU only exists in the reset_after=True form")
        r = sigmoid(xr + h @ Ur)
        z = sigmoid(xz + h @ Uz)
        hh = np.tanh(xh + (r * h) @ Uh)
    else:
        rec = h @ U
        if bU is not None:
            rec = rec + bU
        hr, hz, hn = _split(rec, 3)
        r = sigmoid(xr + hr)
        z = sigmoid(xz + hz)
        hh = np.tanh(xh + r * hn)
    one = np.ones((), dtype=z.dtype)
    return z * h + (one - z) * hh


def mgu_step(x, h, Wf, Uf, Wh, Uh, bf, bh):
    """Minimal gated unit (LANGUAGE.md §4):

      f  = σ(x Wf + h Uf + bf)
      g  = tanh(x Wh + (f ⊙ h) Uh + bh)
      h' = (1 − f) ⊙ h + f ⊙ g
    """
    f = sigmoid(x @ Wf + h @ Uf + bf)
    g = np.tanh(x @ Wh + (f * h) @ Uh + bh)
    one = np.ones((), dtype=f.dtype)
    return (one - f) * h + f * g


# --------------------------------------------------------------------------------------
# adapters: params -> step(x_t, state) -> (output_t, new_state)
# --------------------------------------------------------------------------------------


def basic_cell(W, U, b, activation="tanh"):
    """Step for :func:`run`; state h[B, H]; output = new h."""

    def step(x, h):
        h2 = basic_step(x, h, W, U, b, activation)
        return h2, h2

    return step


def lstm_cell(W, U, b, forget_bias=1.0, wi=None, wf=None, wo=None, P=None, clip=None,
              proj_clip=None):
    """Step for :func:`run`; state (c, h); output = m (the new h)."""

    def step(x, state):
        c, m = lstm_step(x, state, W, U, b, forget_bias, wi, wf, wo, P, clip, proj_clip)
        return m, (c, m)

    return step


def gru_cell(W, U, b, reset_after=False, bU=None):
    """Step for :func:`run`; state h[B, H]; output = new h."""

    def step(x, h):
        h2 = gru_step(x, h, W, U, b, reset_after, bU)
        return h2, h2

    return step


def mgu_cell(Wf, Uf, Wh, Uh, bf, bh):
    """Step for :func:`run`; state h[B, H]; output = new h."""

    def step(x, h):
        h2 = mgu_step(x, h, Wf, Uf, Wh, Uh, bf, bh)
        return h2, h2

    return step


# --------------------------------------------------------------------------------------
# running over time (TF1 dynamic_rnn semantics)
# --------------------------------------------------------------------------------------


def reverse_sequence(x, lengths=None):
    """tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0): reverses
    x[b, :lengths[b]] and leaves x[b, lengths[b]:] where it was."""
    x = np.asarray(x)
    B, T = x.shape[:2]
    n = _lengths(lengths, B, T)
    out = x.copy()
    for i in range(B):
        L = int(n[i])
        out[i, :L] = x[i, :L][::-1]
    return out


def run(step: Callable, x, state0, lengths=None, reverse=False):
    """Run ``step`` over the time axis of x[batch, time, features], TF1 ``dynamic_rnn``.

    TF1 ``_rnn_step`` (tensorflow/python/ops/rnn.py):
    ``(t >= len) ? (zeros, state(len-1)) : cell(input(t), state(t-1))`` — outputs past a
    sequence's length are ZERO, the state is copied through, so the final state is the
    state after the last valid step (length 0 -> the initial state).

    reverse=True: each sequence is reversed within its own length (tf.reverse_sequence),
    run forwards, and the outputs reversed back within their lengths (TF1
    ``bidirectional_dynamic_rnn``'s backward half); padding stays zero at the end.

    Returns (outputs[batch, time, out], final_state).
    """
    x = np.asarray(x)
    B, T = x.shape[:2]
    n = _lengths(lengths, B, T)
    if reverse:
        x = reverse_sequence(x, n)
    state = state0
    outs = []
    for t in range(T):
        valid = t < n  # [B]
        y, new = step(x[:, t], state)
        y = np.asarray(y)
        vy = valid.reshape((B,) + (1,) * (y.ndim - 1))
        outs.append(np.where(vy, y, np.zeros((), dtype=y.dtype)))

        def keep(new_leaf, old_leaf):
            new_leaf = np.asarray(new_leaf)
            old_leaf = np.broadcast_to(np.asarray(old_leaf, dtype=new_leaf.dtype),
                                       new_leaf.shape)
            v = valid.reshape((B,) + (1,) * (new_leaf.ndim - 1))
            return np.where(v, new_leaf, old_leaf)

        state = _tree_map(keep, new, state)
    if outs:
        outputs = np.stack(outs, axis=1)
    else:
        outputs = np.zeros((B, 0, 0), dtype=x.dtype)
    if reverse:
        outputs = reverse_sequence(outputs, n)
    return outputs, state


def stack_run(steps: Sequence[Callable], x, states0, lengths=None):
    """TF1 ``MultiRNNCell`` run by ``dynamic_rnn``: layer k's outputs are layer k+1's inputs.

    Returns (top outputs[batch, time, out], [final state of each layer]).
    (Running layer by layer over the whole sequence equals running the stacked cell step
    by step, since layer k+1 at step t only needs layer k at step t.)
    """
    if len(steps) != len(states0):
        raise ValueError("one initial state per layer")
    finals = []
    h = x
    for step, s0 in zip(steps, states0):
        h, s = run(step, h, s0, lengths)
        finals.append(s)
    return h, finals


def bi_run(step_fw, step_bw, x, s0_fw, s0_bw, lengths=None):
    """Bidirectional run (TF1 ``bidirectional_dynamic_rnn`` + concat): the backward run
    reverses each sequence within its own length. Returns
    (concat([out_fw, out_bw], axis=-1), (final_fw, final_bw))."""
    o_fw, f_fw = run(step_fw, x, s0_fw, lengths)
    o_bw, f_bw = run(step_bw, x, s0_bw, lengths, reverse=True)
    return np.concatenate([o_fw, o_bw], axis=-1), (f_fw, f_bw)


def project(outputs, Wp, bp, lengths=None):
    """``project(n)`` wrapper (TF1 ``OutputProjectionWrapper``, activation=None):
    outputs @ Wp + bp on every step, zero past lengths. The state is untouched."""
    return _zero_past(outputs @ Wp + bp, lengths)


def residual(outputs, x, lengths=None):
    """``residual`` wrapper (TF1 ``ResidualWrapper``): outputs + x, zero past lengths."""
    return _zero_past(outputs + x, lengths)


def final_tensor(state):
    """``final_state`` used as a tensor (LANGUAGE.md §1): the h part of a state.

    array -> itself; tuple (c, h) -> h; list (a stack) -> final_tensor(last layer).
    For bi, call it on each direction and concatenate [fw, bw] on the last axis.
    """
    if isinstance(state, list):
        return final_tensor(state[-1])
    if isinstance(state, tuple):
        return state[-1]
    return state


# --------------------------------------------------------------------------------------
# dense, losses, metrics (LANGUAGE.md §6)
# --------------------------------------------------------------------------------------


def dense(t, W, b=None):
    """Linear layer on the last axis of t (any rank): t @ W + b."""
    y = np.asarray(t) @ W
    return y if b is None else y + b


def log_softmax(z, axis=-1):
    """Stable log-softmax: z - max - log Σ exp(z - max)."""
    z = np.asarray(z)
    zm = z - np.max(z, axis=axis, keepdims=True)
    return zm - np.log(np.sum(np.exp(zm), axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """Stable softmax along ``axis``."""
    z = np.asarray(z)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _weights(lead_shape, lengths, weights, dtype):
    """Weights over the leading (batch[, time]) axes of a per-position loss.

    lengths (only with a time axis): 1 for t < len, 0 after.  weights: [batch] (broadcast
    over time) or exactly lead_shape.  Both given: their product.  Neither: all ones.
    """
    w = np.ones(lead_shape, dtype=dtype)
    if lengths is not None:
        if len(lead_shape) != 2:
            raise ValueError("lengths= needs a [batch, time, ...] input")
        w = w * sequence_mask(_lengths(lengths, *lead_shape), lead_shape[1], dtype)
    if weights is not None:
        wt = np.asarray(weights, dtype=dtype)
        if wt.shape == lead_shape:
            pass
        elif wt.shape == lead_shape[:1]:
            wt = wt.reshape(lead_shape[:1] + (1,) * (len(lead_shape) - 1))
        else:
            raise ValueError(f"weights shape {wt.shape} fits neither {lead_shape[:1]} "
                             f"nor {lead_shape}")
        w = w * wt
    return w


def _weighted_mean(loss, w):
    """Σ w·loss / Σ w; 0 when Σ w == 0 (TF1 sequence_loss divides by Σw + 1e-12)."""
    sw = np.sum(w)
    if sw == 0:
        return np.asarray(0.0, dtype=loss.dtype)
    return np.asarray(np.sum(w * loss) / sw, dtype=loss.dtype)


def mse(pred, target, lengths=None, weights=None):
    """Σ_{b,t} w · mean_features((pred − target)²) / Σ w.

    Rank 3 [batch, time, feat]: w[b, t] from lengths and/or weights ([batch] or
    [batch, time]).  Rank 2 [batch, feat]: w per batch row (weights [batch]).
    Rank 1 [batch]: one value per row.  Returns a 0-d array in the input dtype.
    """
    pred = np.asarray(pred)
    target = np.asarray(target, dtype=pred.dtype)
    d2 = (pred - target) ** 2
    per = d2 if pred.ndim == 1 else np.mean(d2, axis=-1)
    w = _weights(per.shape, lengths, weights, pred.dtype)
    return _weighted_mean(per, w)


def softmax_cross_entropy(logits, labels, lengths=None, weights=None):
    """Σ w · (−log softmax(logits)[label]) / Σ w (stable log-softmax).

    logits[batch, classes] with labels[batch], or logits[batch, time, classes] with
    labels[batch, time] (then lengths= / weights=[batch] or [batch, time] apply).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"logits {logits.shape} need labels {logits.shape[:-1]}, "
                         f"got {labels.shape}")
    lp = log_softmax(logits, axis=-1)
    nll = -np.take_along_axis(lp, labels[..., None], axis=-1)[..., 0]
    w = _weights(nll.shape, lengths, weights, logits.dtype)
    return _weighted_mean(nll, w)


def accuracy(logits, labels, lengths=None, weights=None):
    """Weighted mean of (argmax(logits, -1) == labels), same weighting as the losses."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    hit = (np.argmax(logits, axis=-1) == labels).astype(np.float64)
    w = _weights(hit.shape, lengths, weights, np.float64)
    return float(_weighted_mean(hit, w))


# --------------------------------------------------------------------------------------
# optimizers (float64, pure functions on dicts of arrays)
# --------------------------------------------------------------------------------------


def _f64(d):
    return {k: np.array(v, dtype=np.float64) for k, v in d.items()}


def sgd(params, grads, state, lr, momentum=0.0):
    """torch.optim.SGD (dampening=0, nesterov=False, weight_decay=0), from its docs:

        if momentum != 0:
            buf = g                      on the first step
            buf = momentum * buf + g     afterwards
            g = buf
        p = p - lr * g

    state: {} or None initially; then {"momentum_buffer": {name: buf}}.
    Returns (new_params, new_state).
    """
    p = _f64(params)
    g = _f64(grads)
    state = {} if state is None else state
    new_state = {}
    if momentum != 0:
        bufs = state.get("momentum_buffer", {})
        nb = {}
        for k in p:
            if k in bufs:
                nb[k] = momentum * np.asarray(bufs[k], dtype=np.float64) + g[k]
            else:
                nb[k] = g[k].copy()
            p[k] = p[k] - lr * nb[k]
        new_state["momentum_buffer"] = nb
    else:
        for k in p:
            p[k] = p[k] - lr * g[k]
    return p, new_state


def adam(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, step=None):
    """torch.optim.Adam (amsgrad=False, weight_decay=0), ``_single_tensor_adam``:

        t += 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g²
        bc1 = 1 - beta1**t;  bc2 = 1 - beta2**t
        p = p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
          (= p - lr * m̂ / (sqrt(v̂) + eps),  m̂ = m / bc1,  v̂ = v / bc2)

    state: {} or None initially, then {"step": t, "m": {...}, "v": {...}}.
    step: the 1-based index t of THIS update (PyTorch's state["step"] after its
    increment); None -> state["step"] + 1.  Returns (new_params, new_state).
    """
    p = _f64(params)
    g = _f64(grads)
    state = {} if state is None else state
    t = int(state.get("step", 0)) + 1 if step is None else int(step)
    if t < 1:
        raise ValueError("adam step index is 1-based")
    m0 = state.get("m", {})
    v0 = state.get("v", {})
    m, v = {}, {}
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    for k in p:
        mk = np.asarray(m0.get(k, np.zeros_like(p[k])), dtype=np.float64)
        vk = np.asarray(v0.get(k, np.zeros_like(p[k])), dtype=np.float64)
        m[k] = beta1 * mk + (1.0 - beta1) * g[k]
        v[k] = beta2 * vk + (1.0 - beta2) * g[k] * g[k]
        denom = np.sqrt(v[k]) / math.sqrt(bc2) + eps
        p[k] = p[k] - (lr / bc1) * m[k] / denom
    return p, {"step": t, "m": m, "v": v}


def adamw(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
          step=None):
    """torch.optim.AdamW: decoupled weight decay, p = p * (1 - lr * weight_decay), then
    the Adam update above (on the decayed p).  Default weight_decay 0.01 as in PyTorch."""
    decayed = {k: np.asarray(v, dtype=np.float64) * (1.0 - lr * weight_decay)
               for k, v in params.items()}
    return adam(decayed, grads, state, lr, beta1, beta2, eps, step)


def clip_by_global_norm(grads, clip_norm):
    """TF1 ``tf.clip_by_global_norm`` on a dict: global_norm = sqrt(Σ ‖g‖²),
    g = g * clip_norm / max(global_norm, clip_norm).

    Returns (clipped_grads, global_norm) — like TF, the norm BEFORE clipping.
    """
    g = _f64(grads)
    gn = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
    scale = clip_norm / max(gn, clip_norm)
    return {k: v * scale for k, v in g.items()}, gn


# --------------------------------------------------------------------------------------
# learning-rate schedules (step = 0 for the first update)
# --------------------------------------------------------------------------------------


def exponential(lr, decay, every, step, staircase=False):
    """TF1 ``tf.train.exponential_decay`` (default staircase=False, i.e. continuous):
    lr · decay^(step / every); staircase=True uses floor(step / every)."""
    e = (step // every) if staircase else (step / every)
    return float(lr * decay ** e)


def step_schedule(lr, every, gamma, step):
    """torch.optim.lr_scheduler.StepLR: lr · gamma^floor(step / every)."""
    return float(lr * gamma ** (step // every))


def cosine(lr, total, min_lr=0.0, step=None):
    """Cosine decay (torch CosineAnnealingLR closed form, eta_min=min_lr, T_max=total),
    held at min_lr after ``total``:
    min_lr + (lr − min_lr) · (1 + cos(π · min(step, total) / total)) / 2."""
    if step is None:
        raise TypeError("cosine() needs step")
    s = min(step, total)
    return float(min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * s / total)) / 2.0)


# --------------------------------------------------------------------------------------
# misc
# --------------------------------------------------------------------------------------


def numeric_grad(f, params, eps=1e-6):
    """Central finite differences of scalar f(params) w.r.t. every element (float64).

    params: dict name -> array.  f is called with a dict of float64 copies.
    Returns dict name -> gradient array (float64, same shapes).
    """
    p = _f64(params)
    grads = {}
    for k in p:
        gk = np.zeros_like(p[k])
        flat = p[k].reshape(-1)  # view into p[k]
        gflat = gk.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = float(f(p))
            flat[i] = old - eps
            fm = float(f(p))
            flat[i] = old
            gflat[i] = (fp - fm) / (2.0 * eps)
        grads[k] = gk
    return grads


def tbptt_windows(T, n):
    """Truncated-BPTT windows over T steps: [(0, n), (n, 2n), ...]; the last window may
    be shorter; T = 0 -> []."""
    if n <= 0:
        raise ValueError("window length must be positive")
    return [(s, min(s + n, T)) for s in range(0, T, n)]
