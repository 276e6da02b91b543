"""Requests' images through the model: a bounded queue in front, the batch jobs' streams behind, and concurrent
requests of one shape run as one batch.

On two or more threads the model runs as two streams of half the threads each, as a batch job does
(jobs.streams): each stream takes the images waiting at the front of the queue, as many as the largest of SIZES
that are there, and runs them as one batch. Sizes are few and fixed because the executor records one plan (kernel
calls and buffers) per input shape. A request that needs the model alone (/explain: the attention maps) waits in
the same queue and runs by itself.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numba
import numpy as np

from ..jobs import BATCH, streams

# Batch sizes run, up to `tinyvit serve --max-batch` (default 4: sizes 1, 2 and 4 and /explain's run are the four
# plans the executor keeps, executor.PLANS). On 2 threads of an AMD EPYC, xx-small, 8 clients: 21.5-23.9 images/s
# one at a time, 24.8-27.5 up to 4, 22.6-25.4 up to 8 (two runs each; the machine's noise is of the same size).
SIZES = (1, 2, 4, 8)


class Full(Exception):
    """The queue holds as many requests as it may."""


@dataclass
class Item:
    pixels: np.ndarray | None  # (3, H, W) float32, the processor's output; None for a call
    call: Callable | None = None  # run alone on a stream's thread instead (its result is the future's)
    future: Future = field(default_factory=Future)


class Batcher:
    """The model's streams, each a thread taking batches off one queue; submit() gives a Future of the logits."""

    def __init__(self, model, threads: int, capacity: int, sizes: tuple[int, ...] = SIZES) -> None:
        self.model, self.capacity, self.sizes = model, capacity, sizes
        self.calls, self.each = streams(threads, BATCH + 1)  # (streams, Numba threads each), as a long batch job's
        self.pending: deque[Item] = deque()
        self.ready = threading.Condition()
        self.batches: dict[int, int] = {}  # batch size -> batches run (for the bench and the tests)
        for i in range(self.calls):
            threading.Thread(target=self._stream, daemon=True, name=f"tinyvit-stream-{i}").start()

    def waiting(self) -> int:
        return len(self.pending)

    def submit(self, pixels: np.ndarray | None = None, call: Callable | None = None) -> Future:
        """A Future of this image's logits row (1, ...), or of call()'s result; Full when the queue is."""
        item = Item(pixels, call)
        with self.ready:
            if len(self.pending) >= self.capacity:
                raise Full(f"{len(self.pending)} requests are waiting")
            self.pending.append(item)
            self.ready.notify()
        return item.future

    def _take(self) -> list[Item]:
        """The next batch: a call alone, or the images of one shape at the front, as many as the largest size."""
        with self.ready:
            while not self.pending:
                self.ready.wait()
            first = self.pending[0]
            if first.call is not None:
                return [self.pending.popleft()]
            same = 0
            for item in self.pending:
                if item.call is not None or item.pixels.shape != first.pixels.shape or same == self.sizes[-1]:
                    break
                same += 1
            size = max(s for s in self.sizes if s <= same)
            return [self.pending.popleft() for _ in range(size)]

    def _stream(self) -> None:
        numba.set_num_threads(min(self.each, numba.config.NUMBA_NUM_THREADS))
        while True:
            batch = self._take()
            try:
                if batch[0].call is not None:
                    batch[0].future.set_result(batch[0].call())
                    continue
                logits = self.model(np.stack([item.pixels for item in batch]), return_dict=True).logits
                self.batches[len(batch)] = self.batches.get(len(batch), 0) + 1
                for i, item in enumerate(batch):
                    item.future.set_result(logits[i : i + 1])
            except Exception as e:  # noqa: BLE001 -- the requests of this batch get it; the stream goes on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
