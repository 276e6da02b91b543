"""Multi-head scaled dot-product self-attention (transformers' MobileViTSelfAttention, without the projections).

    q, k, v = split(qkv)                          per head h of size D = C / heads:
    out[t, i, h] = sum_j softmax_j(q[t, i, h] . k[t, j, h] / sqrt(D)) * v[t, j, h]

The input is the fused projection (T, N, 3C): queries, then keys, then values, heads contiguous inside each, which is
what one linear layer with the three weight matrices side by side produces. The fast version gives each task one
(sequence, head) pair and keeps everything of it in L1/L2. It works on the transposed scores, keys down and queries
across, two weight panels of COLS queries at a time (w = 2 COLS, or COLS for the last):

    scores (N, w) = keys (N, D) @ queries^T        the register-tiled product, the queries packed as its weights
    softmax down each column                       each step a whole row of COLS queries: elementwise vector code
    out^T (D, w) = values^T (D, N) @ probs         the same product, the probabilities as its weight panels

and divides by the softmax sums at the store. With queries across, the softmax's maxima and sums are elementwise
(one vector per key), where queries down the rows made each a reduction along a row that did not vectorise (a row
max of scalar lanes). Measured on an Intel Xeon (AVX-512), 1 thread, fastest of 200, two rounds: xx-small's
N = 256, 16 sequence-heads of D = 16: 1.31-1.56 -> 0.91-1.06 ms; N = 64, D = 20: 0.16-0.18 -> 0.150-0.153; the
x86-64-v3 kernels on the same CPU: 1.68-1.79 -> 1.50-1.75 and 0.23-0.24 -> 0.17. Memory stays O(N) per task
however many patches there are.
"""

import math

import numpy as np
from numba import prange

from . import _tiles
from ._checks import KernelArgumentError, f32
from ._exp import exp2_softmax
from ._gemm import COLS, gemm
from ._jit import parallel_tile_caller, tile_caller
from ._launch import launch, output

LOG2E = 1.4426950408889634
column_max = getattr(_tiles, f"column_max_{COLS}")  # generated (_tilegen.py): the maxima in registers


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


@tile_caller
def softmax_columns(s, probs, top, sums):
    """s (N, w) holds the scores of w queries (w = COLS or 2 COLS) in its columns, in base-2 units (the queries carry
    log2(e)): probs[p, :, c] = 2**(s[:, p * COLS + c] - max(s[:, p * COLS + c])), laid out as the weight panels of
    the next product, and the column sums in sums (not divided: the caller scales the output). Every step works on
    whole rows of COLS queries, so maxima and sums are elementwise vector operations, with no reduction across
    lanes (each column's sum adds in key order); the maxima are kept in registers (column_max)."""
    N, w = s.shape
    f = s.reshape(-1)
    for p in range(w // COLS):
        column_max(f, np.uint64(w), N, top, np.uint64(p * COLS))
        panel = probs[p]
        for c in range(COLS):
            sums[p * COLS + c] = np.float32(0.0)
        for j in range(N):
            row, dst = s[j], panel[j]
            for c in range(COLS):
                e = exp2_softmax(row[p * COLS + c] - top[p * COLS + c])
                dst[c] = e
                sums[p * COLS + c] += e


@parallel_tile_caller
def _attention(qkv, heads, out):
    T, N, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    scale = np.float32(LOG2E / math.sqrt(D))  # scores in base 2: softmax(x) = 2**(x log2 e) / sum
    blocks = (N + 2 * COLS - 1) // (2 * COLS)  # blocks of two panels of queries
    zeros = np.zeros((2, COLS), np.float32)
    for task in prange(T * heads):
        t, h = task // heads, task % heads
        q0, k0, v0 = h * D, C + h * D, 2 * C + h * D
        # keys as the rows of the scores product, values transposed as those of the output one; the queries (scaled)
        # as weight panels of the first, COLS queries each, two panels per block
        keys = np.empty((N, D), np.float32)
        values = np.empty((D, N), np.float32)
        queries = np.zeros((blocks, 2, D, COLS), np.float32)
        for j in range(N):
            tok = qkv[t, j]
            panel = queries[j // (2 * COLS), j // COLS % 2]
            for d in range(D):
                keys[j, d] = tok[k0 + d]
                values[d, j] = tok[v0 + d]
                panel[d, j % COLS] = tok[q0 + d] * scale
        s = np.empty((N, 2 * COLS), np.float32)  # scores: keys down, queries across
        probs = np.empty((2, N, COLS), np.float32)  # their softmax, as the weight panels of the output product
        o = np.empty((D, 2 * COLS), np.float32)
        top, sums = np.empty(2 * COLS, np.float32), np.empty(2 * COLS, np.float32)
        for b in range(blocks):
            i0 = b * 2 * COLS
            w = min(2 * COLS, (N - i0 + COLS - 1) // COLS * COLS)  # one panel or two
            sw = s.reshape(-1)[: N * w].reshape(N, w)
            gemm(keys, 0, queries[b], zeros, sw, 0, N, 0, D, w)
            softmax_columns(sw, probs, top, sums)
            gemm(values, 0, probs, zeros, o, 0, D, 0, N, w)  # the weighted values, transposed: (D, queries)
            for c in range(min(w, N - i0)):
                inv = np.float32(1.0) / sums[c]
                dst = out[t, i0 + c]
                for d in range(D):
                    dst[q0 + d] = o[d, c] * inv


def attention(qkv, heads):
    f32("attention qkv", qkv, 3)
    T, N, C3 = qkv.shape
    if heads < 1 or C3 % (3 * heads):
        raise KernelArgumentError(f"attention: {C3} qkv features do not split into 3 x {heads} heads")
    out = output((T, N, C3 // 3))
    launch(_attention, qkv, int(heads), out)
    return out
