"""Multi-head scaled dot-product self-attention (transformers' MobileViTSelfAttention, without the projections).

    q, k, v = split(qkv)                          per head h of size D = C / heads:
    out[t, i, h] = sum_j softmax_j(q[t, i, h] . k[t, j, h] / sqrt(D)) * v[t, j, h]

The input is the fused projection (T, N, 3C): queries, then keys, then values, heads contiguous inside each, which is
what one linear layer with the three weight matrices side by side produces. The fast version gives each task one
(sequence, head) pair and keeps everything of it in L1/L2: it packs the head's keys as the weight panels of the
scores product and its values as those of the output product (_gemm.pack's layout), then takes QUERIES queries at a
time: their scores with the register-tiled product (depth D), a softmax of those rows while they are in L1, and the
weighted values with the same product (depth N), divided by the softmax sums at the store. Memory stays O(N) per
task however many patches there are.
"""

import math

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32
from ._exp import exp2_softmax
from ._gemm import COLS, gemm
from ._jit import kernel, parallel_tile_caller
from ._launch import launch, output

LOG2E = 1.4426950408889634
# queries per block: 24 while a block of scores (24 x N) stays in L1 (N <= 256: 24 KB), else 12 (up to N = 512).
# Measured 24 against 12 (Zen 4, 1 thread, fastest of 8 alternating runs): 1.20 vs 1.30 ms at N = 256, 0.158 vs
# 0.168 at N = 64, 0.029 vs 0.034 at N = 16 (xx-small's three sizes): fewer, longer calls of the product.
QUERIES, LONG = 24, 256


# qkv (T, N, 3C) -> (T, heads, N, N): the softmax of q k^T / sqrt(D) per sequence and head, rows summing to 1
def attention_probs_reference(qkv, heads):
    T, N, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    q, k = (qkv[:, :, i * C : (i + 1) * C].reshape(T, N, heads, D).transpose(0, 2, 1, 3) for i in range(2))
    scores = q.astype(np.float64) @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (scores / scores.sum(axis=-1, keepdims=True)).astype(np.float32)


# qkv (T, N, 3C) -> (T, N, C)
def attention_reference(qkv, heads):
    T, N, C3 = qkv.shape
    C = C3 // 3
    v = qkv[:, :, 2 * C :].reshape(T, N, heads, C // heads).transpose(0, 2, 1, 3)
    return (attention_probs_reference(qkv, heads) @ v).transpose(0, 2, 1, 3).reshape(T, N, C).astype(np.float32)


@kernel
def row_max(row):
    """max(row) in eight running lanes: a single running max does not vectorise (it would need the no-NaN flag)."""
    N = row.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    for j in range(0, N - 7, 8):
        v = row[j : j + 8]
        m0 = v[0] if v[0] > m0 else m0
        m1 = v[1] if v[1] > m1 else m1
        m2 = v[2] if v[2] > m2 else m2
        m3 = v[3] if v[3] > m3 else m3
        m4 = v[4] if v[4] > m4 else m4
        m5 = v[5] if v[5] > m5 else m5
        m6 = v[6] if v[6] > m6 else m6
        m7 = v[7] if v[7] > m7 else m7
    top = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(N - N % 8, N):
        top = max(top, row[j])
    return top


@kernel
def softmax_rows(s, rows, sums):
    """s[r] = 2**(s[r] - max(s[r])) for r < rows (scores in base-2 units: the queries carry log2(e)), their sums in
    sums[r] (not divided: the caller scales the output). Compiled apart, with reassociation, so the sum vectorises
    (the tile callers have none)."""
    N = s.shape[1]
    for r in range(rows):
        row = s[r]
        top = row_max(row)
        total = np.float32(0.0)
        for j in range(N):
            e = exp2_softmax(row[j] - top)
            row[j] = e
            total += e
        sums[r] = total


@parallel_tile_caller
def _attention(qkv, heads, out):
    T, N, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    scale = np.float32(LOG2E / math.sqrt(D))  # scores in base 2: softmax(x) = 2**(x log2 e) / sum
    pn, pd = (N + COLS - 1) // COLS, (D + COLS - 1) // COLS
    for task in prange(T * heads):
        t, h = task // heads, task % heads
        q0, k0, v0 = h * D, C + h * D, 2 * C + h * D
        # keys as panels of the scores product (D deep, N wide), values as panels of the output one (N deep, D wide)
        kp = np.zeros((pn, D, COLS), np.float32)
        vp = np.zeros((pd, N, COLS), np.float32)
        q = np.empty((N, D), np.float32)
        for j in range(N):
            tok = qkv[t, j]
            pj, jj = j // COLS, j % COLS
            for d in range(D):
                q[j, d] = tok[q0 + d] * scale
                kp[pj, d, jj] = tok[k0 + d]
                vp[d // COLS, j, d % COLS] = tok[v0 + d]
        zeros_n, zeros_d = np.zeros((pn, COLS), np.float32), np.zeros((pd, COLS), np.float32)
        block = QUERIES if N <= LONG else QUERIES // 2
        s = np.empty((block, N), np.float32)
        o = np.empty((block, D), np.float32)
        sums = np.empty(block, np.float32)
        for i0 in range(0, N, block):
            rows = min(block, N - i0)
            gemm(q, i0, kp, zeros_n, s, 0, rows, 0, D, N)
            softmax_rows(s, rows, sums)
            gemm(s, 0, vp, zeros_d, o, 0, rows, 0, N, D)
            for r in range(rows):
                inv = np.float32(1.0) / sums[r]
                dst = out[t, i0 + r]
                for d in range(D):
                    dst[q0 + d] = o[r, d] * inv


def attention(qkv, heads):
    f32("attention qkv", qkv, 3)
    T, N, C3 = qkv.shape
    if heads < 1 or C3 % (3 * heads):
        raise KernelArgumentError(f"attention: {C3} qkv features do not split into 3 x {heads} heads")
    out = output((T, N, C3 // 3))
    launch(_attention, qkv, int(heads), out)
    return out
