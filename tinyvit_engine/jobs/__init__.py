"""Batch jobs over image collections: `tinyvit classify` and `tinyvit segment` on many files.

files.py (what to read, what is done, where records go), streams.py (decoding beside batched inference),
workers.py (--workers), ray.py (--ray, and Ray Data datasets), maps.py (label maps as pictures).

- A file that cannot be read or decoded is reported (a line on stderr, an {"image", "error"} record) and skipped;
  the job goes on and ends with the count of failures.
- Results go to a JSON Lines file as images finish, each record written whole in one append and flushed, so a killed
  job leaves every finished image recorded. `resume` skips the images the file already holds (by resolved path) and
  drops a torn last line first, so each image ends up recorded exactly once.
- The model gets batches. On one thread, decoding and preprocessing (Pillow and the kernels release the GIL) run on
  a thread pool ahead of it; on two or more, two streams on half the threads each decode a batch and then run the
  model on it (`streams`, `results`).
- `workers` > 1 (classify) splits the files over that many processes, each with its share of the cores; the parent
  alone writes the output.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import numba

from ..model import Model
from .files import JobError, Output, Progress, expand, recorded
from .maps import label_image, overlay, palette, save_maps
from .streams import BATCH, results, streams
from .workers import records as workers_records

__all__ = [
    "BATCH",
    "JobError",
    "expand",
    "label_image",
    "overlay",
    "palette",
    "recorded",
    "results",
    "run",
    "save_maps",
    "streams",
]


def run(
    model: Model,
    task: str,
    files: list[Path],
    handle: Callable[[dict], None],
    output: Path | None = None,
    resume: bool = False,
    top_k: int = 5,
    workers: int = 1,
    ray_address: str | None = None,
    outdir: Path | None = None,
) -> tuple[int, int]:
    """Run a job with `model`; worker processes and Ray's actors load it again from `model.path`. `handle` sees
    every record as it finishes (the CLI prints it, writes maps). Returns (images done now, images that failed now)."""
    if (workers > 1 or ray_address is not None) and model.path is None:
        raise JobError("--workers and --ray load the model again in other processes: load it from a file")
    if resume and output is not None:
        done = recorded(output)
        files = [f for f in files if str(f.resolve()) not in done]
    writer, progress = Output(output), Progress(len(files))
    failed = finished = 0
    # the objects alive now (the model, Numba's types) stay alive all job: keep the cyclic collector, which the
    # job's many small records set off, from walking them again and again (1% of the job's CPU time)
    gc.freeze()
    try:
        if ray_address is not None:
            from . import ray

            source = ray.records(str(model.path), task, files, top_k, ray_address, outdir)
        elif min(workers, len(files)) > 1:
            source = workers_records(str(model.path), task, files, top_k, workers)
        else:
            source = results(model, task, files, top_k, threads=numba.get_num_threads())
        for record in source:
            handle(record)
            record.pop("label_map", None)
            writer.write(record)
            finished += 1
            failed += "error" in record
            progress.update()
    finally:
        writer.close()
        progress.close()
    return finished, failed
