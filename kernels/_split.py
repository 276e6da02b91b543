"""How a kernel splits its rows into prange tasks: blocks big enough to amortise a tile's setup, small enough that
every thread gets work on the small maps and token sets of the late layers (an 8x8 map in one block of 64 pixels
would leave the second core idle)."""

import numba


def block(total: int, unit: int, preferred: int) -> int:
    """A block size: a multiple of `unit`, at most `preferred`, giving at least two blocks per thread when `total`
    allows it."""
    per_thread = -(-total // (2 * numba.get_num_threads()))
    return max(unit, min(preferred, -(-per_thread // unit) * unit))
