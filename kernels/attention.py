"""Multi-head scaled dot-product self-attention (transformers' MobileViTSelfAttention, without the projections).

    q, k, v = split(qkv)                          per head h of size D = C / heads:
    out[t, i, h] = sum_j softmax_j(q[t, i, h] . k[t, j, h] / sqrt(D)) * v[t, j, h]

The input is the fused projection (T, N, 3C): queries, then keys, then values, heads contiguous inside each, which is
what one linear layer with the three weight matrices side by side produces. The fast version gives each task one
(sequence, head) pair. It first copies the head's keys transposed (D, N) and its values (N, D), so that the scores
of a query are AXPYs over contiguous keys and its output AXPYs over contiguous values; then it takes a block of query
rows at a time (their scores, softmax with a vectorised exp, and weighted sums of values), so memory stays O(N) per
task however many patches there are.
"""

import math

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32
from ._exp import exp
from ._jit import parallel_kernel

QUERIES = 8  # query rows per block: each key and value row loaded from cache serves this many
KEYS = 128  # keys per chunk of the score product, so its slice of scores and keys stays in L1 however long N is


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
    scale = np.float32(1.0 / math.sqrt(D))
    for task in prange(T * heads):
        t, h = task // heads, task % heads
        q0, k0, v0 = h * D, C + h * D, 2 * C + h * D
        # this head's keys transposed (D, N) and values (N, D), contiguous, so both products vectorise
        kt = np.empty((D, N), np.float32)
        v = np.empty((N, D), np.float32)
        for j in range(N):
            for d in range(D):
                kt[d, j] = qkv[t, j, k0 + d]
                v[j, d] = qkv[t, j, v0 + d]
        scores = np.empty((QUERIES, N), np.float32)
        acc = np.empty((QUERIES, D), np.float32)
        for i0 in range(0, N, QUERIES):
            rows = min(QUERIES, N - i0)
            # scores of a block of queries against every key: AXPYs over contiguous keys, each key row
            # loaded once for the whole block (a small GEMM: (rows, D) x (D, N)), chunk by chunk of keys
            scores[:] = 0.0
            for j0 in range(0, N, KEYS):
                j1 = min(j0 + KEYS, N)
                for d in range(D):
                    ktd = kt[d, j0:j1]
                    for r in range(rows):
                        qd = qkv[t, i0 + r, q0 + d] * scale
                        srow = scores[r, j0:j1]
                        for j in range(j1 - j0):
                            srow[j] += qd * ktd[j]
            # softmax of each row, with the vectorised exp
            for r in range(rows):
                top = scores[r].max()
                total = np.float32(0.0)
                for j in range(N):
                    e = exp(scores[r, j] - top)
                    scores[r, j] = e
                    total += e
                scores[r] *= np.float32(1.0) / total
            # probability-weighted sums of the values: (rows, N) x (N, D)
            acc[:] = 0.0
            for j in range(N):
                for r in range(rows):
                    p = scores[r, j]
                    for d in range(D):
                        acc[r, d] += p * v[j, d]
            for r in range(rows):
                for d in range(D):
                    out[t, i0 + r, q0 + d] = acc[r, d]


def attention(qkv, heads):
    f32("attention qkv", qkv, 3)
    T, N, C3 = qkv.shape
    if heads < 1 or C3 % (3 * heads):
        raise KernelArgumentError(f"attention: {C3} qkv features do not split into 3 x {heads} heads")
    out = np.empty((T, N, C3 // 3), np.float32)
    _attention(qkv, int(heads), out)
    return out
