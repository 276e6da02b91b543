"""--workers N: the files split over N processes, each loading the model once with its share of the cores."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

from ..model import load
from .streams import results


def records(model_path: str, task: str, files: list[Path], top_k: int, workers: int) -> Iterator[dict]:
    """The job's records from `workers` processes, each loading the model from model_path with its share of the cores
    (the parent alone writes the output); a worker that dies fails its remaining files, not the job."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(workers, len(files) or 1))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue(maxsize=64)
    share = max(1, cores // workers)
    shards = [[str(f) for f in files[i::workers]] for i in range(workers)]
    procs = [
        context.Process(target=_start_worker, args=(str(share), model_path, task, shard, top_k, share, queue, i))
        for i, shard in enumerate(shards)
    ]
    for p in procs:
        p.start()
    seen: list[set[str]] = [set() for _ in procs]
    finished = [False] * len(procs)
    while not all(finished):
        try:
            worker, record = queue.get(timeout=1.0)
        except Empty:  # a worker that died without saying so (killed, out of memory): its other files fail
            for i, p in enumerate(procs):
                if not finished[i] and p.exitcode is not None:
                    finished[i] = True
                    for path in shards[i]:
                        if path not in seen[i]:
                            yield {"image": path, "error": f"the worker process died (exit code {p.exitcode})"}
            continue
        if record is None:
            finished[worker] = True
            continue
        seen[worker].add(record["image"])
        yield record
    for p in procs:
        p.join()


def _start_worker(threads: str, *args) -> None:
    os.environ["NUMBA_NUM_THREADS"] = threads  # before numba is imported in this fresh process
    _worker(*args)


def _worker(model_path: str, task: str, files: list[str], top_k: int, threads: int, queue, index: int) -> None:
    """One of --workers' processes: (index, record) for each of its files onto the queue, then (index, None)."""
    try:
        model = load(model_path)
        for record in results(model, task, [Path(f) for f in files], top_k, threads):
            queue.put((index, record))
    finally:
        queue.put((index, None))
