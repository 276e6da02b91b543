"""Multi-head scaled dot-product self-attention (transformers' MobileViTSelfAttention, without the projections).

    q, k, v = split(qkv)                          per head h of size D = C / heads:
    out[t, i, h] = sum_j softmax_j(q[t, i, h] . k[t, j, h] / sqrt(D)) * v[t, j, h]

The input is the fused projection (T, N, 3C): queries, then keys, then values, heads contiguous inside each, which is
what one linear layer with the three weight matrices side by side produces. The fast version gives each task one
(sequence, head) pair. It copies the head's keys and values transposed to (D, N), then takes four queries at a time
through the dense products of _gemm.py: their scores (depth D, shallow: AXPYs over the keys), a softmax with the
vectorised exp, and the weighted sums of values (depth N, deep: dot products over the patches). Memory stays O(N) per
task however many patches there are.
"""

import math

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32
from ._exp import exp
from ._gemm import ROWS, block_product, dot_product
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
    scale = np.float32(1.0 / math.sqrt(D))
    for task in prange(T * heads):
        t, h = task // heads, task % heads
        q0, k0, v0 = h * D, C + h * D, 2 * C + h * D
        # this head's keys as (D, N) and values as (D, N), contiguous over patches
        kt = np.empty((D, N), np.float32)
        vt = np.empty((D, N), np.float32)
        for j in range(N):
            for d in range(D):
                kt[d, j] = qkv[t, j, k0 + d]
                vt[d, j] = qkv[t, j, v0 + d]
        zeros_n, zeros_d = np.zeros(N, np.float32), np.zeros(D, np.float32)
        q = np.empty((ROWS, D), np.float32)
        scores = np.empty((ROWS, N), np.float32)
        acc = np.empty((ROWS, D), np.float32)
        for i0 in range(0, N, ROWS):
            rows = min(ROWS, N - i0)
            for r in range(rows):
                for d in range(D):
                    q[r, d] = qkv[t, i0 + r, q0 + d] * scale
            # scores = q kt: shallow (depth D), so AXPYs over the N keys
            block_product(q, kt, zeros_n, scores, 0, rows)
            # softmax of each row, with the vectorised exp
            for r in range(rows):
                top = scores[r].max()
                total = np.float32(0.0)
                for j in range(N):
                    e = exp(scores[r, j] - top)
                    scores[r, j] = e
                    total += e
                scores[r] *= np.float32(1.0) / total
            # out = scores vt^T: deep (depth N), so dot products over the N patches
            dot_product(scores, vt, zeros_d, acc, 0, rows)
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
