"""The generator of _tiles.py: register tiles spelled out with literal indices, which is what lets LLVM keep them in
vector registers (a loop over the tile, or a scratch array, stays in memory; see ../shared PERF_NOTES).

    python kernels/_tilegen.py          # print what it generates
    python kernels/_tilegen.py --write  # regenerate kernels/_tiles.py (a test checks it is current)

The tiles read and write flat (1-D) arrays at unsigned offsets (uint64; `u(...)` below), for two measured reasons:
- every array view Numba makes (a row, a slice) costs a call to increment and one to decrement a reference count:
  a tile taking a dozen views spent more in those calls than in its multiply-adds;
- Numba adds wraparound code to every signed index it cannot prove >= 0, which hides from LLVM that the lanes of a
  row are consecutive addresses, so they are not packed into one vector load or store.
The generated functions are plain Numba code in a real file, so Numba's cache keeps their machine code across
processes (a function exec'd from a string cannot be cached).

How to change a tile, step by step:
1. Print what is generated now: `python kernels/_tilegen.py | less` (one function per tile:
   product_{rows}x{columns}, depthwise_3x3_{lanes}, column_max_{lanes}).
2. Change the shape or the code here: PRODUCT_TILES (which (rows, columns) exist), product_tile / depthwise_tile /
   column_max_tile (what a tile computes, line by line; the last is attention's softmax maxima). Which tile a machine
   runs is chosen in _gemm.py (ROWS, from the vector registers the CPU has: 16 on AVX2, 32 on AVX-512 and ARM) and
   depthwise_conv2d.py; a tile's sums must fit in them.
3. Regenerate: `python kernels/_tilegen.py --write` (rewrites _tiles.py; run as a file, it needs no import of the
   package, whose _gemm.py may already ask for a tile not yet generated; the cache stamp in _jit.py makes every
   kernel recompile on its next call).
4. Check: `python -m pytest -q tests/test_kernels.py` (every kernel against its NumPy reference on odd shapes, and
   that _tiles.py is what this file generates), then the models: `python -m pytest -q -m "not slow"`.
5. Measure: `python -m tinyvit_engine.bench --profile mobilevit-xx-small` (GFLOP/s per op against this machine's
   peak) and `python -m tinyvit_engine.bench --models mobilevit-xx-small --threads 1 2`. To see whether the sums
   stayed in registers, look at the machine code: `dispatcher.inspect_asm()` of a kernel (spills show as loads and
   stores to the stack, `(%rsp)`, inside the k loop).
"""

import sys
from pathlib import Path

PANEL = 16  # columns per packed weight panel; a tile is one or more panels wide
# (rows, columns) of the product tiles that are generated; _gemm.py picks a wide and a one-panel tile per machine
PRODUCT_TILES = ((3, 32), (3, 16), (4, 16), (6, 16), (8, 32), (8, 16))
DEPTHWISE_LANES = (8, 16)  # channels per depthwise block: one vector of AVX2 or of AVX-512 at 512 bits


def u(n) -> str:
    return f"np.uint64({n})"


def constants(n: int) -> list[str]:
    """u0 ... u{n-1}: the unsigned lane offsets, made once (each np.uint64() call costs Numba compile time)."""
    return [f"    u{j} = {u(j)}" for j in range(n)]


def product_tile(mr: int, nr: int) -> str:
    """c[co + r * ldc + j] = b[bo + j] + sum_k a[ao + r * lda + k] w[wo_q + k * PANEL + j % PANEL] for the mr x nr tile
    (column j in panel q = j // PANEL, whose offset is wo_q), its sums in registers for the whole loop over k."""
    rows, cols, panels = range(mr), range(nr), range(nr // PANEL)
    wo = ", ".join(f"wo{q}" for q in panels)
    lines = [
        "@tile",
        f"def product_{mr}x{nr}(a, ao, lda, w, {wo}, b, bo, c, co, ldc, depth):",
        f"    # a, w (packed panels of {PANEL} columns), b, c: flat float32 arrays; offsets and strides: uint64",
        *constants(max(nr, mr)),
        f"    step = {u(PANEL)}",
        *(f"    a{r} = ao + u{r} * lda" for r in rows),
        *(f"    b{j} = b[bo + u{j}]" for j in cols),
    ]
    for r in rows:
        lines += [f"    c{r}_{j} = b{j}" for j in cols]
    lines += ["    for k in range(depth):", "        uk = np.uint64(k)"]
    lines += [f"        wk{q} = wo{q} + uk * step" for q in panels]
    lines += [f"        w{j} = w[wk{j // PANEL} + u{j % PANEL}]" for j in cols]
    for r in rows:
        lines.append(f"        x{r} = a[a{r} + uk]")
        lines += [f"        c{r}_{j} += x{r} * w{j}" for j in cols]
    for r in rows:
        lines.append(f"    o = co + u{r} * ldc")
        lines += [f"    c[o + u{j}] = c{r}_{j}" for j in cols]
    return "\n".join(lines) + "\n"


def depthwise_tile(lanes: int) -> str:
    """Output pixels lo ... lo + n - 1 of one row of a 3x3 depthwise conv, for `lanes` channels from c0: the 9 x lanes
    weights stay in registers for the whole run, each pixel's sums too. Every tap of these pixels is inside the map
    (the caller clips the border). r0, r1, r2 are the three input rows of the taps, flat (W * C); pixel lo + i reads
    the columns x0 + i * s + kx * d. w is the flat (3, 3, C) filter, row the flat (Wo, C) output row."""
    ls, taps = range(lanes), [(ky, kx) for ky in range(3) for kx in range(3)]
    lines = ["@tile", f"def depthwise_3x3_{lanes}(r0, r1, r2, x0, s, d, C, c0, w, bias, row, lo, n):"]
    lines += constants(max(lanes, 9))
    for ky, kx in taps:
        lines.append(f"    t = u{ky * 3 + kx} * C + c0")
        lines += [f"    w{ky}{kx}_{j} = w[t + u{j}]" for j in ls]
    lines += [f"    b{j} = bias[c0 + u{j}]" for j in ls]
    lines += ["    for i in range(n):", "        ui = np.uint64(i)", "        p0 = (x0 + ui * s) * C + c0"]
    lines += [f"        s{j} = b{j}" for j in ls]
    for kx in range(3):
        lines.append(f"        p = p0 + u{kx} * d * C")
        for ky in range(3):
            lines += [f"        s{j} += r{ky}[p + u{j}] * w{ky}{kx}_{j}" for j in ls]
    lines.append("        o = (lo + ui) * C + c0")
    lines += [f"        row[o + u{j}] = s{j}" for j in ls]
    return "\n".join(lines) + "\n"


def column_max_tile(lanes: int) -> str:
    """top[t0 + c] = the max of f[r * ld + c] over rows r < n, for c < lanes: a block of columns of the flat array f
    (attention's scores, queries across). The running maxima stay in registers, in two sets (even and odd rows) to
    halve the chain of dependent max instructions; a loop over an array of maxima compiled to masked stores that
    the next row's loads waited on."""
    ls = range(lanes)
    lines = ["@tile", f"def column_max_{lanes}(f, ld, n, top, t0):", *constants(lanes)]
    lines += [f"    m{j} = e{j} = f[u{j}]" for j in ls]
    lines += ["    for r in range(1, n - 1, 2):", "        o, p = np.uint64(r) * ld, np.uint64(r + 1) * ld"]
    for j in ls:
        lines += [f"        v = f[o + u{j}]", f"        m{j} = v if v > m{j} else m{j}"]
        lines += [f"        v = f[p + u{j}]", f"        e{j} = v if v > e{j} else e{j}"]
    lines += ["    if n % 2 == 0:  # the last row", "        o = np.uint64(n - 1) * ld"]
    for j in ls:
        lines += [f"        v = f[o + u{j}]", f"        m{j} = v if v > m{j} else m{j}"]
    lines += [f"    top[t0 + u{j}] = m{j} if m{j} > e{j} else e{j}" for j in ls]
    return "\n".join(lines) + "\n"


def source() -> str:
    head = '"""Generated by _tilegen.py: do not edit; run `python kernels/_tilegen.py --write`."""\n\n'
    body = [product_tile(mr, nr) for mr, nr in PRODUCT_TILES] + [depthwise_tile(n) for n in DEPTHWISE_LANES]
    body.append(column_max_tile(PANEL))
    return head + "import numpy as np\n\nfrom ._jit import tile\n\n\n" + "\n\n".join(body)


TARGET = Path(__file__).with_name("_tiles.py")

if __name__ == "__main__":
    if "--write" in sys.argv:
        TARGET.write_text(source())
    else:
        print(source(), end="")
