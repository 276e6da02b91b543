"""Multi-head scaled dot-product self-attention (transformers' MobileViTSelfAttention, without the projections).

    q, k, v = split(qkv)                          per head h of size D = C / heads:
    out[t, i, h] = sum_j softmax_j(q[t, i, h] . k[t, j, h] / sqrt(D)) * v[t, j, h]

The input is the fused projection (T, N, 3C): queries, then keys, then values, heads contiguous inside each, which is
what one linear layer with the three weight matrices side by side produces. The fast version gives each task one
(sequence, head) pair and one query row at a time: a row of N scores, its softmax, and the weighted sum of values, so
memory stays O(N) however many patches there are.
"""

import math

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32
from ._jit import parallel_kernel


# qkv (T, N, 3C) -> (T, N, C)
def attention_reference(qkv, heads):
    T, N, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    q, k, v = (qkv[:, :, i * C : (i + 1) * C].reshape(T, N, heads, D).transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(T, N, C).astype(np.float32)


@parallel_kernel
def _attention(qkv, heads, out):
    T, N, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    scale = 1.0 / math.sqrt(D)
    for task in prange(T * heads):
        t, h = task // heads, task % heads
        q0, k0, v0 = h * D, C + h * D, 2 * C + h * D
        scores = np.empty(N, np.float32)
        acc = np.empty(D, np.float32)
        for i in range(N):
            # scores of query i against every key, and their max for a stable softmax
            top = -np.inf
            for j in range(N):
                s = np.float32(0.0)
                for d in range(D):
                    s += qkv[t, i, q0 + d] * qkv[t, j, k0 + d]
                s *= scale
                scores[j] = s
                top = max(top, s)
            total = 0.0
            for j in range(N):
                e = math.exp(scores[j] - top)
                scores[j] = e
                total += e
            # probability-weighted sum of the values
            acc[:] = 0.0
            for j in range(N):
                p = scores[j]
                for d in range(D):
                    acc[d] += p * qkv[t, j, v0 + d]
            inv = 1.0 / total
            for d in range(D):
                out[t, i, h * D + d] = acc[d] * inv


def attention(qkv, heads):
    f32("attention qkv", qkv, 3)
    T, N, C3 = qkv.shape
    if heads < 1 or C3 % (3 * heads):
        raise KernelArgumentError(f"attention: {C3} qkv features do not split into 3 x {heads} heads")
    out = np.empty((T, N, C3 // 3), np.float32)
    _attention(qkv, int(heads), out)
    return out
