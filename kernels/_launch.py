"""How the kernel wrappers allocate their outputs and start their jitted kernels: through `output` and `launch`, so
that an executor can record a whole run once and replay it.

Outside a recording, `output` is np.empty and `launch` a plain call. Inside one (`recording`, per thread), `output`
asks the recorder's allocator (an executor hands out buffers of a memory plan) and `launch` also appends the call
to the recorder's tape. Replaying the tape runs the same jitted kernels on the same buffers with none of the Python
work in between (argument checks, shape arithmetic, allocation), which is only valid for the same input shape: the
executor keeps one tape per shape.
"""

import threading
from contextlib import contextmanager

import numpy as np

_state = threading.local()


class Recorder:
    def __init__(self, alloc) -> None:
        self.alloc = alloc  # shape -> a float32 C-contiguous array of that shape
        self.calls: list[tuple] = []  # (function, args), in the order they ran


def output(shape: tuple) -> np.ndarray:
    """A new float32 output array of this shape (from the recorder's allocator while recording)."""
    recorder = getattr(_state, "recorder", None)
    return np.empty(shape, np.float32) if recorder is None else recorder.alloc(shape)


def launch(kernel, *args) -> None:
    """Call kernel(*args), and append the call to the tape while recording."""
    recorder = getattr(_state, "recorder", None)
    if recorder is not None:
        recorder.calls.append((kernel, args))
    kernel(*args)


@contextmanager
def recording(recorder: Recorder):
    """Record this thread's kernel calls and allocations into `recorder`."""
    _state.recorder = recorder
    try:
        yield recorder
    finally:
        _state.recorder = None
