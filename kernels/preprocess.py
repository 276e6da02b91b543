"""The image processor's pixel work in one pass: Pillow's resize, center crop, rescale and RGB -> BGR, bit for bit.

transformers' MobileViT processor resizes the whole RGB image with Pillow (`Image.resize`, a convolution filter),
rescales it (float64(uint8) * factor, rounded to float32), center-crops it (zero padding where the image is smaller
than the crop) and flips the channels. This op gives the same float32 values, and computes only the pixels that the
crop keeps (a 288 x 432 resize cropped to 256 x 256 keeps half of them).

Pillow's arithmetic (libImaging/Resample.c), per axis, for output index i of `n_out` from `n_in`:

    scale = n_in / n_out;  fs = max(scale, 1);  support = filter.support * fs
    center = (i + 0.5) * scale
    lo = max(int(center - support + 0.5), 0);  hi = min(int(center + support + 0.5), n_in)
    w[t] = filter((lo + t - center + 0.5) / fs) for t < hi - lo, then w /= sum(w)      (float64)
    k[t] = int(w[t] * 2**22 + 0.5), or - 0.5 when w[t] < 0                         (22 fraction bits)

The horizontal pass runs first, over the source rows the vertical pass reads; each sum starts at 2**21 (rounding)
and ends as clamp(sum >> 22, 0, 255), a uint8; the vertical pass does the same on that result. An axis whose size
does not change is not resampled: its coefficients are one tap of 2**22, which is the identity. Then each uint8 v
becomes float32(float64(v) * factor), read from a 256-entry table.

Tricks of the fast version: the coefficients are computed by a jitted function without fastmath (IEEE, in Pillow's
order of operations, with the C library's sin and cos); the vertical pass adds whole rows (all columns and channels
at once), which vectorises; no full-size resized image is ever made. Nearest-neighbour resizing is not a filter in
Pillow (a different code path): the processor leaves it, and a processor without rescaling, to Pillow and NumPy.
"""

import math

import numpy as np

from ._checks import KernelArgumentError, positive
from ._jit import cache_is_warm, exact_kernel

NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING = 0, 1, 2, 3, 4, 5  # PIL.Image.Resampling
SUPPORT = {BOX: 0.5, BILINEAR: 1.0, HAMMING: 1.0, BICUBIC: 2.0, LANCZOS: 3.0}
BITS = 22  # Pillow's PRECISION_BITS: 32 - 8 - 2
# Pillow's hamming window: 0.54f + 0.46f * cos(x), float constants widened to double
H0, H1 = float(np.float32(0.54)), float(np.float32(0.46))


def pillow_filter(code, x):
    """Pillow's filter functions, in its order of operations."""
    if code == BOX:
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    if code == LANCZOS:  # truncated sinc, over [-3, 3)
        if -3.0 <= x < 3.0:
            a = 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)
            b = 1.0 if x / 3 == 0.0 else math.sin(x / 3 * math.pi) / (x / 3 * math.pi)
            return a * b
        return 0.0
    x = -x if x < 0.0 else x
    if code == BILINEAR:
        return 1.0 - x if x < 1.0 else 0.0
    if code == HAMMING:
        if x == 0.0:
            return 1.0
        if x >= 1.0:
            return 0.0
        x = x * math.pi
        return math.sin(x) / x * (H0 + H1 * math.cos(x))
    # BICUBIC, a = -0.5
    if x < 1.0:
        return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


def _coefficients(code, n_in, n_out, first, count, lo, taps, k):
    """For output indices first .. first + count - 1: the first source index, the number of taps and the integer
    weights of each (rows of k, zero past the taps). An axis of unchanged size gets the identity."""
    if n_in == n_out:
        for i in range(count):
            lo[i], taps[i], k[i, 0] = first + i, 1, 1 << BITS
        return
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = SUPPORT_OF[code] * fs
    inv = 1.0 / fs
    w = np.empty(k.shape[1], np.float64)
    for i in range(count):
        center = (first + i + 0.5) * scale
        a = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), n_in) - a
        total = 0.0
        for t in range(n):
            w[t] = _pillow_filter(code, (t + a - center + 0.5) * inv)
            total += w[t]
        for t in range(n):
            v = w[t] / total if total != 0.0 else w[t]
            k[i, t] = int(-0.5 + v * (1 << BITS)) if v < 0 else int(0.5 + v * (1 << BITS))
        lo[i], taps[i] = a, n


def weights_reference(code, n_in, n_out):
    """Pillow's coefficients of one axis: for each output index, (first source index, integer weights)."""
    if n_in == n_out:
        return [(i, [1 << BITS]) for i in range(n_out)]
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = SUPPORT[code] * fs
    found = []
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = [pillow_filter(code, (x - center + 0.5) * (1.0 / fs)) for x in range(lo, hi)]
        total = 0.0
        for v in w:  # left to right, as Pillow adds (Python's sum() may compensate)
            total += v
        w = [v / total for v in w] if total != 0.0 else w
        found.append((lo, [int(v * (1 << BITS) + (-0.5 if v < 0 else 0.5)) for v in w]))
    return found


def _ksize(code, n_in, n_out):
    """Pillow's bound on the taps of one output (2 * ceil(support) + 1)."""
    if n_in == n_out:
        return 1
    return int(math.ceil(SUPPORT[code] * max(n_in / n_out, 1.0))) * 2 + 1


def _clip8(acc):
    v = acc >> BITS
    return 0 if v < 0 else (255 if v > 255 else v)


# image (H, W, 3) uint8 -> (3, ch, cw) float32
def preprocess_reference(image, size, resample, crop, factor, flip, vertical_first=False):
    """Resize `image` to size (h, w) with Pillow's filter `resample` (the vertical pass first if asked), crop the
    centre (ch, cw), rescale by factor, flip RGB -> BGR if asked: plain loops over Pillow's arithmetic."""
    (h, w), (ch, cw) = size, crop
    top, left = (h - ch) // 2, (w - cw) // 2  # floor, negative when the crop pads

    def resample_axis(x, n_out):  # along axis 0 of x (n_in, M, 3)
        out = np.empty((n_out, *x.shape[1:]), np.int64)
        for i, (lo, k) in enumerate(weights_reference(resample, x.shape[0], n_out)):
            acc = (1 << (BITS - 1)) + sum(x[lo + t].astype(np.int64) * kt for t, kt in enumerate(k))
            out[i] = np.clip(acc >> BITS, 0, 255)
        return out

    def horizontal(x):
        return resample_axis(x.transpose(1, 0, 2), w).transpose(1, 0, 2)

    # one pass after the other, each rounded to uint8 values, as Pillow does
    resized = horizontal(resample_axis(image, h)) if vertical_first else resample_axis(horizontal(image), h)
    table = (np.arange(256, dtype=np.float64) * factor).astype(np.float32)
    out = np.zeros((3, ch, cw), np.float32)
    for i in range(ch):
        for j in range(cw):
            if 0 <= i + top < h and 0 <= j + left < w:
                rgb = table[resized[i + top, j + left]]
                out[:, i, j] = rgb[::-1] if flip else rgb
    return out


def _horizontal(src, lo, taps, k, out):
    """out[y, (j, c)] = clip8(sum_t src[y, (lo[j] + t, c)] * k[j, t]): rows of (column, channel) values. (Unsigned
    offsets into flat rows: a signed index gets Numba's wraparound code, which made this loop twice as slow.)"""
    half = 1 << (BITS - 1)
    for y in range(src.shape[0]):
        row, dst = src[y], out[y]
        for j in range(lo.shape[0]):
            a = np.uint64(3 * lo[j])
            r = g = b = half
            for t in range(taps[j]):
                w = k[j, t]
                r += np.int32(row[a]) * w
                g += np.int32(row[a + np.uint64(1)]) * w
                b += np.int32(row[a + np.uint64(2)]) * w
                a += np.uint64(3)
            o = np.uint64(3 * j)
            dst[o] = _clip8(r)
            dst[o + np.uint64(1)] = _clip8(g)
            dst[o + np.uint64(2)] = _clip8(b)


def _vertical(src, first, lo, taps, k, out):
    """out[i, m] = clip8(sum_t src[lo[i] + t, first + m] * k[i, t]): whole rows at once, which vectorises."""
    acc = np.empty(out.shape[1], np.int32)
    for i in range(lo.shape[0]):
        acc[:] = 1 << (BITS - 1)
        for t in range(taps[i]):
            w = k[i, t]
            row = src[lo[i] + t, first:]
            for m in range(acc.shape[0]):
                acc[m] += np.int32(row[m]) * w
        for m in range(acc.shape[0]):
            out[i, m] = _clip8(acc[m])


def _store(done, table, flip, out, i0, j0):
    """out[c', i0 + i, j0 + j] = table[done[i, (j, c)]], c' the channel flipped if asked (unsigned offsets)."""
    _, height, width = out.shape
    flat = out.reshape(-1)
    for i in range(done.shape[0]):
        row = done[i]
        for c in range(3):
            o = np.uint64((2 - c if flip else c) * height * width + (i0 + i) * width + j0)
            for j in range(done.shape[1] // 3):
                flat[o + np.uint64(j)] = table[row[np.uint64(3 * j + c)]]


SUPPORT_OF = np.array([0.0, SUPPORT[LANCZOS], SUPPORT[BILINEAR], SUPPORT[BICUBIC], SUPPORT[BOX], SUPPORT[HAMMING]])
_pillow_filter = exact_kernel(pillow_filter, inline=True)
_clip8 = exact_kernel(_clip8, inline=True)
_coefficients = exact_kernel(_coefficients)
_horizontal = exact_kernel(_horizontal)
_vertical = exact_kernel(_vertical)
_store = exact_kernel(_store)


def preprocess(image, size, resample, crop, factor, flip, vertical_first=False):
    """The fast version of preprocess_reference (same arguments, same float32 values)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise KernelArgumentError(f"preprocess image: expected a uint8 (H, W, 3) array, got {_describe(image)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise KernelArgumentError(f"preprocess image: expected a non-empty image, got shape {image.shape}")
    if resample not in SUPPORT:
        raise KernelArgumentError(
            f"preprocess: resample must be one of Pillow's filters {sorted(SUPPORT)}, got {resample!r}"
        )
    (h, w), (ch, cw) = size, crop
    positive(h=h, w=w, ch=ch, cw=cw)
    image = np.ascontiguousarray(image)
    top, left = (h - ch) // 2, (w - cw) // 2
    # the resized rows and columns that land inside the crop
    r0, r1, c0, c1 = max(top, 0), min(top + ch, h), max(left, 0), min(left + cw, w)
    y = _axis(resample, image.shape[0], h, r0, r1 - r0)
    x = _axis(resample, image.shape[1], w, c0, c1 - c0)
    table = (np.arange(256, dtype=np.float64) * float(factor)).astype(np.float32)
    pads = r1 - r0 != ch or c1 - c0 != cw
    out = np.zeros((3, ch, cw), np.float32) if pads else np.empty((3, ch, cw), np.float32)
    (ylo, ytaps, yk), (xlo, xtaps, xk) = y, x
    # (H, W * 3): rows of (column, channel) values; every source array the passes read is typed read-only, as
    # np.asarray(PIL image) is, so each pass compiles once
    src = image.reshape(image.shape[0], -1).view()
    src.setflags(write=False)
    done = np.empty((len(ylo), 3 * len(xlo)), np.uint8)
    if vertical_first:  # over the source columns the horizontal pass reads
        a, b = xlo[0], xlo[-1] + xtaps[-1]
        mid = np.empty((len(ylo), 3 * (b - a)), np.uint8)
        _vertical(src, 3 * a, ylo, ytaps, yk, mid)
        mid.setflags(write=False)
        _horizontal(mid, xlo - a, xtaps, xk, done)
    else:  # over the source rows the vertical pass reads
        a, b = ylo[0], ylo[-1] + ytaps[-1]
        mid = np.empty((b - a, 3 * len(xlo)), np.uint8)
        _horizontal(src[a:b], xlo, xtaps, xk, mid)
        mid.setflags(write=False)
        _vertical(mid, 0, ylo - a, ytaps, yk, done)
    _store(done, table, bool(flip), out, r0 - top, c0 - left)
    return out


def compiled() -> bool:
    """Whether the fast version runs without compiling first: compiled in this process, or in Numba's cache."""
    return all(cache_is_warm(f) for f in (_coefficients, _horizontal, _vertical, _store))


def _axis(resample, n_in, n_out, first, count):
    k = np.zeros((count, _ksize(resample, n_in, n_out)), np.int32)
    lo, taps = np.empty(count, np.int64), np.empty(count, np.int64)
    _coefficients(resample, n_in, n_out, first, count, lo, taps, k)
    return lo, taps, k


def _describe(a) -> str:
    return f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
