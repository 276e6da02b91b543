"""How a kernel splits its rows into prange tasks: blocks big enough to amortise a tile's setup, small enough that
every thread gets work on the small maps and token sets of the late layers (an 8x8 map in one block of 64 pixels
would leave the second core idle)."""

from numba import config


def block(total: int, unit: int, preferred: int) -> int:
    """A block size: a multiple of `unit`, at most `preferred`, giving at least two blocks per thread of the pool
    when `total` allows it. (The pool's size, not numba.get_num_threads(): that costs a microsecond a call, and a
    smaller split than needed costs nothing.)"""
    per_thread = -(-total // (2 * config.NUMBA_NUM_THREADS))
    return max(unit, min(preferred, -(-per_thread // unit) * unit))
