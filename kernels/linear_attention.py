"""Separable self-attention with linear complexity (MobileViTV2's MobileViTV2LinearSelfAttention, without the
projections).

    q, k, v = qkv[..., :1], qkv[..., 1:C+1], qkv[..., C+1:]       (one query channel, C keys, C values)
    score[t, j] = softmax_j(q[t, j])                              over the N patches of sequence t
    context[t, c] = sum_j k[t, j, c] * score[t, j]
    out[t, j, c] = relu(v[t, j, c]) * context[t, c]

The fast version gives each task one sequence: a max and an exp-sum over the query column, one pass accumulating the
context vector, one pass writing the output, all contiguous over channels.
"""

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32
from ._exp import exp
from ._jit import parallel_kernel
from ._launch import launch, output


# qkv (T, N, 1 + 2C) -> (T, N): the context scores, softmax over the N patches of the query channel
def context_scores_reference(qkv):
    q = qkv[:, :, 0].astype(np.float64)
    e = np.exp(q - q.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# qkv (T, N, 1 + 2C) -> (T, N, C)
def linear_attention_reference(qkv):
    C = (qkv.shape[2] - 1) // 2
    k, v = qkv[:, :, 1 : C + 1], qkv[:, :, C + 1 :]
    score = context_scores_reference(qkv)[:, :, None]
    context = (k * score).sum(axis=1, keepdims=True)
    return (np.maximum(v, 0) * context).astype(np.float32)


@parallel_kernel
def _linear_attention(qkv, out):
    T, N, C3 = qkv.shape
    C = (C3 - 1) // 2
    for t in prange(T):
        top = -np.inf
        for j in range(N):
            top = max(top, qkv[t, j, 0])
        total = 0.0
        context = np.zeros(C, np.float32)
        for j in range(N):
            e = exp(qkv[t, j, 0] - top)
            total += e
            for c in range(C):
                context[c] += e * qkv[t, j, 1 + c]
        inv = 1.0 / total
        for c in range(C):
            context[c] *= inv
        for j in range(N):
            for c in range(C):
                out[t, j, c] = max(qkv[t, j, 1 + C + c], 0.0) * context[c]


def linear_attention(qkv):
    f32("linear_attention qkv", qkv, 3)
    T, N, C3 = qkv.shape
    if C3 < 3 or C3 % 2 == 0:
        raise KernelArgumentError(f"linear_attention: {C3} features are not 1 query + C keys + C values")
    out = output((T, N, (C3 - 1) // 2))
    launch(_linear_attention, qkv, out)
    return out
