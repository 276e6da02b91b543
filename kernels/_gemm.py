"""The matrix product every dense kernel shares: out[m0:m1, :n] = bias + a[m0:m1] @ w, through register tiles.

The weight is packed once into panels of COLS columns: wp (P, K, COLS), panel p holding columns p * COLS ...
p * COLS + COLS - 1 (zero past N), so a tile reads one contiguous COLS-vector per panel per step of K. A tile
(generated in _tiles.py) keeps its ROWS x (2 * COLS) sums in vector registers for the whole K loop: per step it loads
the weight vectors of two panels and broadcasts one input value per row, 2 * ROWS * COLS multiply-adds. A last single
panel takes the one-panel tile; rows and columns that do not fill a tile go through the same tiles on zero-padded
scratch copies, so two compiled tiles serve every shape. The product is serial: callers run it inside their own
prange task.

The tile shape is chosen per machine from the number of vector registers. AVX2 has 16: 3 x 32 keeps 12 of them as
sums, 4 for weights and 1 for the broadcast (measured on Zen 3, GFLOP/s at 1 thread for M x K x N = 1024x144x288:
3x32 76, 5x16 72, 8x8 73, 4x16 70, 6x16 55, 4x24 45). AVX-512 has 32 (used at 256-bit width, as LLVM prefers on
Intel): 6 x 32 keeps 24.
"""

import llvmlite.binding as llvm
import numpy as np

from . import _tiles
from ._jit import tile_caller
from ._tilegen import PANEL as COLS

ROWS = 6 if "+avx512f" in llvm.get_host_cpu_features().flatten() else 3
wide = getattr(_tiles, f"product_{ROWS}x{2 * COLS}")
narrow = getattr(_tiles, f"product_{ROWS}x{COLS}")
# products one panel wide (N <= 16: attention's weighted values, narrow reduce convs) take 6 rows at a time: with 3
# rows the 6 sums are too few chains to hide the multiply-add latency, and loads outnumber multiply-adds
TALL = 6
tall = _tiles.product_6x16


def pack(w: np.ndarray, bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """w (K, N), bias (N,) or None -> weight panels (P, K, COLS) and bias panels (P, COLS), zero-padded."""
    K, N = w.shape
    P = -(-N // COLS)
    wp = np.zeros((K, P * COLS), np.float32)
    wp[:, :N] = w
    bp = np.zeros(P * COLS, np.float32)
    if bias is not None:
        bp[:N] = bias
    return np.ascontiguousarray(wp.reshape(K, P, COLS).transpose(1, 0, 2)), bp.reshape(P, COLS)


def unpack(wp: np.ndarray, n: int) -> np.ndarray:
    """The (K, n) weight held in panels (the inverse of pack, for references and checks)."""
    P, K, _ = wp.shape
    return wp.transpose(1, 0, 2).reshape(K, P * COLS)[:, :n]


# a (M, >= k1 - k0), wp (P, K, COLS), bp (P, COLS), out (M', >= n)
def gemm_reference(a, am, wp, bp, out, om, rows, k0, k1, n):
    w = unpack(wp, n)[k0:k1]
    out[om : om + rows, :n] = bp.reshape(-1)[:n] + a[am : am + rows, : k1 - k0] @ w


@tile_caller
def gemm(a, am, wp, bp, out, om, rows, k0, k1, n):
    """out[om:om+rows, :n] = bias + a[am:am+rows, :k1 - k0] @ w[k0:k1, :n], with w and bias packed."""
    full = n // COLS  # panels stored straight into out; a last partial one goes through scratch
    mr = TALL if n <= COLS else ROWS  # rows per block
    c = np.empty(TALL * COLS if n % COLS or rows < mr else 0, np.float32)
    wf, bf, of = wp.reshape(-1), bp.reshape(-1), out.reshape(-1)
    if rows < mr:  # too few rows for one tile: a zero-padded copy
        src = np.zeros((mr, k1 - k0), np.float32)
        src[:rows] = a[am : am + rows, : k1 - k0]
        _rows(src.reshape(-1), 0, k1 - k0, wf, wp.shape[1], bf, of, om, out.shape[1], mr, rows, k0, k1, n, 0, c)
        return
    af = a.reshape(-1)
    for i in range(0, rows, mr):
        i = min(i, rows - mr)  # the last block overlaps the one before rather than running past the rows
        _rows(af, am + i, a.shape[1], wf, wp.shape[1], bf, of, om + i, out.shape[1], mr, mr, k0, k1, n, full, c)


@tile_caller
def _one(a, ao, lda, w, wo, b, bo, c, co, ldc, depth, mr):
    """The one-panel tile for mr rows (a branch, not a function variable: Numba would call that indirectly)."""
    if mr == TALL:
        tall(a, ao, lda, w, wo, b, bo, c, co, ldc, depth)
    else:
        narrow(a, ao, lda, w, wo, b, bo, c, co, ldc, depth)


@tile_caller
def _rows(a, am, lda, w, K, b, out, om, ldc, mr, stored, k0, k1, n, full, c):
    """One block of mr rows (`stored` of them stored), all flat: the wide tile on pairs of panels, the narrow one
    on a last single panel (the tall one for mr = TALL); panels from `full` on through the scratch c (partial, or
    all when stored < mr)."""
    ao, depth, ulda, uldc = np.uint64(am * lda), k1 - k0, np.uint64(lda), np.uint64(ldc)
    panel = np.uint64(K * COLS)  # floats per weight panel
    w0 = np.uint64(k0 * COLS)  # this depth range's first row in every panel
    co = np.uint64(om * ldc)
    p = 0
    while p + 2 <= full:
        up = np.uint64(p)
        wide(
            a,
            ao,
            ulda,
            w,
            w0 + up * panel,
            w0 + (up + np.uint64(1)) * panel,
            b,
            up * np.uint64(COLS),
            out,
            co + up * np.uint64(COLS),
            uldc,
            depth,
        )
        p += 2
    if p < full:
        _one(
            a,
            ao,
            ulda,
            w,
            w0 + np.uint64(p) * panel,
            b,
            np.uint64(p * COLS),
            out,
            co + np.uint64(p * COLS),
            uldc,
            depth,
            mr,
        )
        p += 1
    while p * COLS < n:
        _one(
            a,
            ao,
            ulda,
            w,
            w0 + np.uint64(p) * panel,
            b,
            np.uint64(p * COLS),
            c,
            np.uint64(0),
            np.uint64(COLS),
            depth,
            mr,
        )
        for r in range(stored):
            for j in range(min(COLS, n - p * COLS)):
                out[(om + r) * ldc + p * COLS + j] = c[r * COLS + j]
        p += 1
