"""Batch-job throughput (`python -m tinyvit_engine.bench --job PHOTOS... [--repeat 40]`): images/s end to end
(read, decode, preprocess, infer: tinyvit_engine/jobs, what `tinyvit classify` runs) against the model alone on the
same number of images, at each thread count, in one worker process per thread count (NUMBA_NUM_THREADS).

"The model alone" is the better of two ways to run it on those threads: one call per batch of 8 on all of them, or
two calls at once on half of them each (what the job does). Both, and the job, are timed in interleaved rounds, so
a busy moment of the machine hits all alike; reported are medians.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def measure(engine_file: str, files: list[str], threads: int, rounds: int) -> dict:
    """Medians in images/s, from a fresh worker process on `threads` Numba threads."""
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "tinyvit_engine.bench.job", engine_file, str(rounds), *files]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return {"threads": threads, **json.loads(done.stdout.splitlines()[-1])}


def _worker(engine_file: str, rounds: int, files: list[Path]) -> dict:
    import numba

    from ..jobs import BATCH, results, streams
    from ..model import load

    model = load(engine_file)
    threads = numba.get_num_threads()
    size = model.processor.crop_hw
    x = np.random.default_rng(0).random((BATCH, 3, *size), dtype=np.float32)
    batches = max(1, len(files) // BATCH)

    def calls(n: int) -> float:
        """images/s of `batches` model calls, n at once on threads // n Numba threads each."""

        def loop(count: int) -> None:
            numba.set_num_threads(max(1, threads // n))
            for _ in range(count):
                model(x)

        workers = [threading.Thread(target=loop, args=(batches // n + (i < batches % n),)) for i in range(n)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return batches * BATCH / (time.perf_counter() - start)

    def job() -> float:
        start = time.perf_counter()
        n = sum(1 for _ in results(model, "classify", files, 5, threads))
        return n / (time.perf_counter() - start)

    ways = {"one call": lambda: calls(1)}
    if threads >= 2:
        ways["two calls"] = lambda: calls(2)
    ways["job"] = job
    for way in ways.values():  # warm-up: plans recorded, files in the page cache
        way()
    timed: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            timed[name].append(way())
    medians = {k: float(np.median(v)) for k, v in timed.items()}
    alone = max(v for k, v in medians.items() if k != "job")
    return {
        **medians,
        "model alone": alone,
        "share": medians["job"] / alone,
        "job calls": streams(threads, len(files)),
        "images": len(files),
        "rounds": timed,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| threads | model alone, one call (img/s) | model alone, two calls | end to end | share |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        two = f"{r['two calls']:.1f}" if "two calls" in r else "-"
        lines.append(f"| {r['threads']} | {r['one call']:.1f} | {two} | {r['job']:.1f} | {r['share'] * 100:.0f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1], int(sys.argv[2]), [Path(f) for f in sys.argv[3:]])))
