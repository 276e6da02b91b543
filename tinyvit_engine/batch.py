"""Batch jobs over image collections: `tinyvit classify` and `tinyvit segment` on many files.

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
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import numba
import numpy as np

from .errors import TinyVitError
from .processor import load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
BATCH = 8


class JobError(TinyVitError):
    """A job that cannot start: no such path, no images, an unreadable list or output file."""


def expand(paths: Iterable[str]) -> list[Path]:
    """Files as given, folders walked for image files (recursively, sorted), and @list.txt: one path per line."""
    found: list[Path] = []
    for arg in paths:
        if arg.startswith("@"):
            listed = Path(arg[1:])
            try:
                lines = listed.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise JobError(f"{listed}: cannot read the list of paths ({e})") from None
            found += expand([line.strip() for line in lines if line.strip() and not line.startswith("#")])
            continue
        p = Path(arg)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise JobError(f"{p}: no such file or directory")
    return found


def recorded(output: Path) -> set[str]:
    """The resolved paths an output file already holds; a torn last line (a killed job) is cut off first."""
    if not output.exists():
        return set()
    if output.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {str(Path(p).resolve()) for p in pq.read_table(output, columns=["image"]).column("image").to_pylist()}
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(output, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done = set()
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            done.add(str(Path(json.loads(line)["image"]).resolve()))
        except (ValueError, KeyError, TypeError):
            raise JobError(f"{output}:{number}: not a record of this tool; pass another --output") from None
    return done


class Output:
    """JSON Lines, one whole record per append, flushed (None: no file). A .parquet file is written (atomically,
    with the rows it already held) when the job ends instead: Parquet cannot be appended to."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.rows = path, []
        self.parquet = path is not None and path.suffix == ".parquet"
        self.fd = None
        if path is not None and not self.parquet:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record) + "\n").encode())
        elif self.parquet:
            self.rows.append({"image": record["image"], "result": json.dumps(record)})

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.parquet and self.rows:
            import pyarrow as pa
            import pyarrow.parquet as pq

            old = pq.read_table(self.path).to_pylist() if self.path.exists() else []
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            pq.write_table(pa.Table.from_pylist(old + self.rows), tmp)
            os.replace(tmp, self.path)


class Progress:
    """Images done, images/s and time left on stderr, on a terminal only (tqdm when installed)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start, self.bar = total, 0, time.perf_counter(), None
        self.show = sys.stderr.isatty() and total > 1
        if self.show:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.show:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate else 0
        print(f"\r{self.done}/{self.total} images, {rate:.1f}/s, {left:.0f} s left ", end="", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.show:
            print(file=sys.stderr)


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
        return Decoded(path, processor._one(image), (image.height, image.width))
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

        yield from _runs(decoded())


def _runs(decoded: Iterable[Decoded]) -> Iterator[list[Decoded]]:
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
            yield from _batch_records(model, task, top_k, batch)
        return

    def stream(group: list[Path]) -> list[dict]:
        decoded = [decode(model.processor, f) for f in group] if each == 1 else list(decoders.map(_decode, group))
        records = []
        for batch in _runs(decoded):
            records += _batch_records(model, task, top_k, batch)
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


def _batch_records(model, task: str, top_k: int, batch: list[Decoded]) -> Iterator[dict]:
    """The records of one run of `_runs`: the model on its images (a failed file alone: its error)."""
    from .pipelines import top_labels
    from .postprocess import post_process_semantic_segmentation

    if batch[0].error is not None:
        yield {"image": str(batch[0].path), "error": batch[0].error}
        return
    logits = model(np.stack([d.pixels for d in batch])).logits
    if task == "classify":
        for d, labels in zip(batch, top_labels(model, logits, top_k), strict=True):
            yield {"image": str(d.path), "labels": labels}
        return
    maps = post_process_semantic_segmentation(logits, [d.size for d in batch])
    for d, label_map in zip(batch, maps, strict=True):
        counts = np.bincount(label_map.ravel(), minlength=model.config.num_labels)
        shares = {model.config.id2label[k]: round(float(c) / label_map.size, 6) for k, c in enumerate(counts) if c}
        yield {"image": str(d.path), "shares": shares, "label_map": label_map}


def _worker(model_path: str, task: str, files: list[str], top_k: int, threads: int, queue, index: int) -> None:
    """One of --workers' processes: (index, record) for each of its files onto the queue, then (index, None)."""
    from .model import load

    try:
        model = load(model_path)
        for record in results(model, task, [Path(f) for f in files], top_k, threads):
            queue.put((index, record))
    finally:
        queue.put((index, None))


def run(
    model,
    model_path: str,
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
    """Run a job with `model` (loaded from model_path, which worker processes load again); `handle` sees every
    record as it finishes (the CLI prints it, writes maps). Returns (images done now, images that failed now)."""
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
            source = _ray_records(model_path, task, files, top_k, ray_address, outdir)
        else:
            source = _records(model, model_path, task, files, top_k, workers)
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


def _records(model, model_path, task, files, top_k, workers) -> Iterator[dict]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(workers, len(files) or 1))
    if workers == 1:
        yield from results(model, task, files, top_k, threads=numba.get_num_threads())
        return
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


def _ray_records(model_path, task, files, top_k, address: str, outdir) -> Iterator[dict]:
    """The job on Ray Data (tinyvit_engine/ray.py): a local instance for address "local", else that cluster's."""
    import ray

    from . import ray as on_ray

    if not ray.is_initialized():
        import logging

        local = address == "local"
        ray.init(
            address=None if local else address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
    if not files:
        return
    dataset = ray.data.from_items([{"image": str(f)} for f in files])
    if task == "classify":
        out = on_ray.classify(dataset, model_path, top_k)
    else:
        out = on_ray.segment(dataset, model_path, outdir)
    for row in out.iter_rows():
        record = {"image": row["image"]}
        if row["error"]:
            record["error"] = row["error"]
        elif task == "classify":
            record["labels"] = json.loads(row["labels"])
        else:
            record["shares"] = json.loads(row["shares"])
        yield record


def _start_worker(threads: str, *args) -> None:
    os.environ["NUMBA_NUM_THREADS"] = threads  # before numba is imported in this fresh process
    _worker(*args)


def palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map: class k's RGB from the bits of k, so neighbouring classes differ."""
    colors = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors[k] = (r, g, b)
    return colors


def save_maps(outdir: Path, path: Path, label_map: np.ndarray) -> None:
    """<stem>.labels.png (class indices, VOC colours) and <stem>.overlay.png (the classes over the photo)."""
    from PIL import Image

    colors = palette()
    labels = Image.fromarray(label_map.astype(np.uint8), mode="P")
    labels.putpalette(colors.tobytes())
    labels.save(outdir / f"{path.stem}.labels.png")
    photo = np.asarray(load_image(str(path)), np.float32)
    overlay = np.where(label_map[..., None] > 0, 0.4 * photo + 0.6 * colors[label_map], photo)
    Image.fromarray(overlay.round().astype(np.uint8)).save(outdir / f"{path.stem}.overlay.png")
