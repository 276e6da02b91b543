"""Images through the model: decoded and preprocessed beside inference, in batches of one shape, as records.

On one thread, decoding and preprocessing (Pillow and the kernels release the GIL) run on a thread pool ahead of the
model; on two or more, two streams on half the threads each decode a batch and then run the model on it (`streams`,
`results`). Ray's actors make their records with the same `runs` and `batch_records`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from ..postprocess import post_process_semantic_segmentation, top_labels
from ..processor import load_image

BATCH = 8


@dataclass
class Decoded:
    path: Path
    pixels: np.ndarray | None = None  # (3, H, W) float32, the processor's output for one image
    size: tuple[int, int] | None = None  # (height, width) of the image as decoded
    error: str | None = None


def decode(processor, path: Path) -> Decoded:
    """One file, read, decoded and preprocessed; a failure becomes the record's error."""
    try:
        image = load_image(str(path))
        return Decoded(path, processor.process_one(image), (image.height, image.width))
    except Exception as e:  # a broken file of any kind: Pillow raises many types, and this job must go on
        reason = " ".join(str(e).splitlines()) or type(e).__name__
        return Decoded(path, error=reason.removeprefix(f"{path}: "))


def batches(model, files: list[Path], threads: int) -> Iterator[list[Decoded]]:
    """Decoded files in order, in batches of up to BATCH of one shape (a failed file comes alone), with decoding
    running up to a few batches ahead of the caller on `threads` threads."""
    processor = model.processor
    if len(files) == 1:  # one image: decoded here (a pool thread's malloc arena would keep its buffers: +8 MB RSS)
        yield [decode(processor, files[0])]
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ahead: deque = deque()
        todo = iter(files)
        for path in todo:
            ahead.append(pool.submit(decode, processor, path))
            if len(ahead) >= 3 * BATCH:
                break

        def decoded() -> Iterator[Decoded]:
            while ahead:
                item = ahead.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append(pool.submit(decode, processor, nxt))
                yield item

        yield from runs(decoded())


def runs(decoded: Iterable[Decoded]) -> Iterator[list[Decoded]]:
    """Runs of up to BATCH decoded images of one shape, in order; a failed file comes alone."""
    pending: list[Decoded] = []
    for item in decoded:
        if item.error is not None:
            if pending:
                yield pending
                pending = []
            yield [item]
            continue
        if pending and pending[0].pixels.shape != item.pixels.shape:
            yield pending
            pending = []
        pending.append(item)
        if len(pending) == BATCH:
            yield pending
            pending = []
    if pending:
        yield pending


def streams(threads: int, files: int) -> tuple[int, int]:
    """(model calls at once, Numba threads each) for a job of `files` images on `threads` threads: two calls of half
    the threads each, when there are two threads and more than a batch."""
    if threads >= 2 and files > BATCH:
        return 2, threads // 2
    return 1, threads


def results(model, task: str, files: list[Path], top_k: int, threads: int) -> Iterator[dict]:
    """One record per file, in order: {"image", "labels": [{"label", "score"}]} (classify), {"image", "shares",
    "label_map"} (segment; label_map is dropped before writing), or {"image", "error"}. `threads`: the job's
    threads (Numba's), for decoding and for the model.

    On one thread, the model runs in the calling thread and a pool of two threads decodes ahead of it (on the other
    core, if there is one). On two or more, the model's threads fill the cores, and the job runs as two streams of
    half the threads each, each decoding a batch and then running the model on it: two single-threaded calls keep
    two cores busy without waiting for each other (one call on two threads meets the other at every parallel loop's
    end, and waits there whenever a decoding thread holds a core), and with no decoding threads beside them, no
    core switches between decoding and the model mid-batch (measured: 3% more images/s than decoding in a pool)."""
    calls, each = streams(threads, len(files))
    if calls == 1:
        for batch in batches(model, files, max(2, threads)):
            yield from batch_records(model, task, top_k, batch)
        return

    def stream(group: list[Path]) -> list[dict]:
        decoded = [decode(model.processor, f) for f in group] if each == 1 else list(decoders.map(_decode, group))
        records = []
        for batch in runs(decoded):
            records += batch_records(model, task, top_k, batch)
        return records

    def _decode(path: Path) -> Decoded:
        return decode(model.processor, path)

    in_flight: deque = deque()
    groups = (files[i : i + BATCH] for i in range(0, len(files), BATCH))
    with (
        ThreadPoolExecutor(
            calls, initializer=numba.set_num_threads, initargs=(min(each, numba.config.NUMBA_NUM_THREADS),)
        ) as pool,
        ThreadPoolExecutor(threads) as decoders,  # used when a stream has more than one thread
    ):
        for group in groups:
            in_flight.append(pool.submit(stream, group))
            if len(in_flight) > calls:  # one group waiting behind each running stream
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()


def batch_records(model, task: str, top_k: int, batch: list[Decoded]) -> Iterator[dict]:
    """The records of one run of `runs`: the model on its images (a failed file alone: its error)."""
    if batch[0].error is not None:
        yield {"image": str(batch[0].path), "error": batch[0].error}
        return
    logits = model(np.stack([d.pixels for d in batch]), return_dict=True).logits
    if task == "classify":
        for d, labels in zip(batch, top_labels(model.config, logits, top_k), strict=True):
            yield {"image": str(d.path), "labels": labels}
        return
    maps = post_process_semantic_segmentation(logits, [d.size for d in batch])
    for d, label_map in zip(batch, maps, strict=True):
        counts = np.bincount(label_map.ravel(), minlength=model.config.num_labels)
        shares = {model.config.id2label[k]: round(float(c) / label_map.size, 6) for k, c in enumerate(counts) if c}
        yield {"image": str(d.path), "shares": shares, "label_map": label_map}
