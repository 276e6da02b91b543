"""Which kernel taps of a convolution land inside the input, so kernels never visit the zero padding."""

from ._jit import inline


@inline
def tap_range(start, size, taps, dilation):
    """Taps t in [lo, hi) with 0 <= start + t * dilation < size (an empty range when none do).

    `start` is the input coordinate of tap 0 (output index * stride - padding); it may be negative.
    """
    lo = 0 if start >= 0 else (-start + dilation - 1) // dilation
    if start >= size:
        hi = 0
    else:
        hi = min(taps, (size - 1 - start) // dilation + 1)
    return lo, max(lo, hi)
