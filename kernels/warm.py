"""Compile every kernel before a model needs it: `python -m tinyvit_engine.kernels.warm [--reverse]`.

Numba compiles a kernel at its first call and caches the machine code for this CPU, so the first run after an
install spends most of its time compiling, one kernel after another, on one core. The executor, when it finds the
cache empty, starts this module in a second process, in reverse order (the ops a model reaches last first), while
the first run compiles in the usual order: a kernel the helper has cached by the time the run reaches it is loaded,
not compiled, and the two meet in the middle. A deployment can also run it once at build time (a container image,
say), so that no user ever waits.

Each call below is one small valid input per op, with the argument types the models pass (float32, C-contiguous,
every optional argument present or absent as the ops' wrappers normalise it), so each compiles exactly the
specialisation a model uses; a test holds the list to the models.
"""

import sys

import numpy as np

from . import FAST
from .activation import SILU
from .preprocess import BILINEAR, preprocess


def _calls():
    """(op, thunk) in about the order a model first reaches them; the ops that need the shared product (and its
    tiles, most of the compile) first, so that a helper going backwards starts with the rest."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x = r(1, 9, 9, 8)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    return [
        ("conv2d", lambda: FAST.conv2d(x, r(3, 3, 8, 16), r(16), 2, 1, 1, SILU)),
        (
            "inverted_residual",
            lambda: FAST.inverted_residual(x, r(8, 16), r(16), r(3, 3, 16), r(16), r(16, 8), r(8), 1, SILU, x),
        ),
        ("pointwise_conv2d", lambda: FAST.pointwise_conv2d(x, r(8, 16), r(16), SILU)),
        ("depthwise_conv2d", lambda: FAST.depthwise_conv2d(x, r(3, 3, 8), r(8), 1, 1, 1, SILU)),
        ("linear", lambda: FAST.linear(r(20, 8), r(8, 24), r(24), SILU, None)),
        ("attention", lambda: FAST.attention(r(4, 16, 24), 2)),
        ("unfold", lambda: FAST.unfold(x, 2, 2)),
        ("layer_norm", lambda: FAST.layer_norm(r(20, 8), r(8), r(8), 1e-5)),
        ("group_norm", lambda: FAST.group_norm(r(1, 81, 8), r(8), r(8), 1e-5)),
        ("linear_attention", lambda: FAST.linear_attention(r(4, 16, 17))),
        ("fold", lambda: FAST.fold(r(4, 16, 8), 2, 2, 8, 8)),
        ("activation", lambda: FAST.activation(x, SILU)),
        ("global_avg_pool", lambda: FAST.global_avg_pool(x)),
        ("resize_bilinear", lambda: FAST.resize_bilinear(x, 13, 11)),
        # the image processor's: last, so that a helper going backwards compiles it first (the first run's
        # processor takes Pillow's path until it is compiled)
        ("preprocess", lambda: preprocess(image, (9, 7), BILINEAR, (8, 8), 1 / 255, True)),
    ]


def compile_kernels(reverse: bool = False) -> list[str]:
    """Compile (or load from the cache) every kernel; returns the ops in the order they were done."""
    calls = _calls()[::-1] if reverse else _calls()
    for _, call in calls:
        call()
    return [op for op, _ in calls]


if __name__ == "__main__":
    compile_kernels(reverse="--reverse" in sys.argv[1:])
