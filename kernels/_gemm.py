"""The matrix product every dense kernel shares: out[m0:m1, :n] = bias + a[m0:m1] @ w, through register tiles.

The weight is packed once into panels of COLS columns: wp (P, K, COLS), panel p holding columns p * COLS ...
p * COLS + COLS - 1 (zero past N), so a tile reads one contiguous COLS-vector per panel per step of K. A tile
(generated in _tiles.py) keeps its ROWS x (2 * COLS) sums in vector registers for the whole K loop: per step it loads
the weight vectors of two panels and broadcasts one input value per row, 2 * ROWS * COLS multiply-adds. A last single
panel takes the one-panel tile, and products only one panel wide take a taller one-panel tile (TALL rows); rows and
columns that do not fill a tile go through the same tiles on zero-padded scratch copies, so three compiled tiles
serve every shape. The product is serial: callers run it inside their own prange task.

The tile shape is chosen per machine from the number of vector registers. AVX2 has 16: 3 x 32 keeps 12 of them as
sums, 4 for weights and 1 for the broadcast (measured on Zen 3, GFLOP/s at 1 thread for M x K x N = 1024x144x288:
3x32 76, 5x16 72, 8x8 73, 4x16 70, 6x16 55, 4x24 45). AVX-512 has 32, of 16 floats each (512-bit: _target.WIDE):
8 x 32 keeps 16 of them as sums, and the broadcasts are folded into the multiply-adds. The shape follows the target
the kernels are compiled for (_target.py): 3 rows for x86-64-v3 (on any x86-64 CPU it runs on), 8 for x86-64-v4 and
for a host with AVX-512 (TINYVIT_TARGET=host).

To change a tile (its shape, or which one a machine runs): _tilegen.py's header, step by step.
"""

import numpy as np
from numba import types

from . import _tiles
from ._jit import TARGET, product
from ._target import tall_rows, tile_rows
from ._tilegen import PANEL as COLS

ROWS = tile_rows(TARGET)  # the target's, not the host's: 3, or 8 on AVX-512 (TINYVIT_TILE_ROWS forces one)
wide = getattr(_tiles, f"product_{ROWS}x{2 * COLS}")
narrow = getattr(_tiles, f"product_{ROWS}x{COLS}")
# products one panel wide (N <= 16: attention's weighted values, narrow reduce convs) take more rows at a time: with
# 3 rows the 6 sums are too few chains to hide the multiply-add latency, and loads outnumber multiply-adds. 8 rows
# on AVX-512, 6 on ARM, 4 on AVX2, whose 16 registers do not hold 6 (see tall_rows)
TALL = tall_rows(TARGET)
tall = getattr(_tiles, f"product_{TALL}x{COLS}")


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


_in2, _in3 = types.float32[:, ::1].copy(readonly=True), types.float32[:, :, ::1].copy(readonly=True)  # callers' arrays
_out2, _int = types.float32[:, ::1], types.int64  # convert to these (writable arrays to read-only, literals to int64)


@product((_in2, _int, _in3, _in2, _out2, _int, _int, _int, _int, _int))
def gemm(a, am, wp, bp, out, om, rows, k0, k1, n):
    """out[om:om+rows, :n] = bias + a[am:am+rows, :k1 - k0] @ w[k0:k1, :n], with w and bias packed.

    One call site per tile, so the tiles' code is here once."""
    mr = TALL if n <= COLS else ROWS  # rows per block
    depth, panel = k1 - k0, np.uint64(wp.shape[1] * COLS)  # panel: floats per weight panel
    w0 = np.uint64(k0 * COLS)  # this depth range's first row in every panel
    wf, bf, of = wp.reshape(-1), bp.reshape(-1), out.reshape(-1)
    c = np.empty(max(TALL, ROWS) * COLS, np.float32)  # scratch tile: partial panels, and all panels when rows < mr
    if rows < mr:  # too few rows for one tile: a zero-padded copy
        src = np.zeros((mr, depth), np.float32)
        src[:rows] = a[am : am + rows, :depth]
        af, lda, first = src.reshape(-1), depth, 0
    else:
        af, lda, first = a.reshape(-1), a.shape[1], am
    ldc = out.shape[1]
    for i in range(0, max(rows, mr), mr):
        i = min(i, max(rows - mr, 0))  # the last block overlaps the one before rather than running past the rows
        ao = np.uint64((first + i) * lda)
        p = 0
        while p * COLS < n:
            up = np.uint64(p)
            cols = min(COLS, n - p * COLS)
            direct = rows >= mr and cols == COLS  # the tile's rows and columns all belong in out
            two = direct and mr == ROWS and n - p * COLS >= 2 * COLS  # a pair of full panels: the wide tile
            if direct:
                dst, co, ld = of, np.uint64((om + i) * ldc + p * COLS), np.uint64(ldc)
            else:
                dst, co, ld = c, np.uint64(0), np.uint64(COLS)
            if two:
                wide(
                    af,
                    ao,
                    np.uint64(lda),
                    wf,
                    w0 + up * panel,
                    w0 + (up + np.uint64(1)) * panel,
                    bf,
                    up * np.uint64(COLS),
                    of,
                    co,
                    ld,
                    depth,
                )
                p += 2
                continue
            if mr == TALL:
                tall(af, ao, np.uint64(lda), wf, w0 + up * panel, bf, up * np.uint64(COLS), dst, co, ld, depth)
            else:
                narrow(af, ao, np.uint64(lda), wf, w0 + up * panel, bf, up * np.uint64(COLS), dst, co, ld, depth)
            if not direct:
                for r in range(min(mr, rows)):
                    for j in range(cols):
                        out[om + i + r, p * COLS + j] = c[r * COLS + j]
            p += 1
