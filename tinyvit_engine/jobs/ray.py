"""Batch jobs on Ray Data, for when one machine is not enough (`pip install "tinyvit-engine[ray]"`).

    ds = ray.data.from_items([{"image": path} for path in paths])
    out = tinyvit_engine.jobs.ray.classify(ds, "mobilevit-xx-small.safetensors", top_k=5)   # a Dataset, lazily

The images are decoded and preprocessed in Ray tasks; inference runs in a pool of actors that each load the model
once (`map_batches` with a callable class); concurrency and batch size come from the cluster's CPUs unless given.
Each output row is {"image", "labels"} (classify; labels as a JSON string of [{"label", "score"}]) or {"image",
"shares"} (segment; shares as a JSON string), and "error": "" or why the file could not be used, so a broken file
is a row, never a failed job. Ray retries a batch whose actor died (its model loaded again in a new actor), and a
batch's rows appear only once it has succeeded: every image comes out exactly once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ray

from ..formats import preprocessor_config
from ..model import load
from ..processor import MobileViTImageProcessor
from .maps import save_maps
from .streams import BATCH, Decoded, batch_records, decode, runs


def _decode_batch(batch: dict, model_path: str) -> dict:
    """Ray task: paths -> (3, H, W) float32 pixels as bytes (empty for a failure), their shapes, sizes, errors."""
    processor = _processor(model_path)
    pixels, shapes, sizes, errors = [], [], [], []
    for path in batch["image"]:
        d = decode(processor, Path(str(path)))
        ok = d.error is None
        pixels.append(d.pixels.tobytes() if ok else b"")
        shapes.append(json.dumps(list(d.pixels.shape) if ok else []))
        sizes.append(json.dumps(list(d.size) if ok else []))
        errors.append("" if ok else d.error)
    return {"image": batch["image"], "pixels": pixels, "shape": shapes, "size": sizes, "error": errors}


_processors: dict = {}


def _processor(model_path: str):
    """The model's image processor, read once per worker process (a task reads no weights twice)."""
    if model_path not in _processors:
        _processors[model_path] = MobileViTImageProcessor.from_dict(preprocessor_config(model_path) or {})
    return _processors[model_path]


class _Infer:
    """Ray actor: the model, loaded once; a batch of decoded images -> their records."""

    def __init__(self, model_path: str, task: str, top_k: int, threads: int, outdir: str | None) -> None:
        import numba

        self.threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))  # this actor's share of the cores
        self.model, self.task, self.top_k, self.outdir = load(model_path), task, top_k, outdir

    def __call__(self, batch: dict) -> dict:
        import numba

        # per call: Numba's thread count is per thread, and Ray need not call an actor in the thread that made it
        numba.set_num_threads(self.threads)
        decoded = [
            Decoded(Path(str(path)), error=str(error))
            if error
            else Decoded(
                Path(str(path)),
                np.frombuffer(pixels, np.float32).reshape(json.loads(shape)),
                tuple(json.loads(size)),
            )
            for path, pixels, shape, size, error in zip(
                batch["image"], batch["pixels"], batch["shape"], batch["size"], batch["error"], strict=True
            )
        ]
        answers = []  # the same records as one process makes, in the same order
        for run in runs(decoded):
            for record in batch_records(self.model, self.task, self.top_k, run):
                if "error" in record:
                    answers.append("")
                elif self.task == "classify":
                    answers.append(json.dumps(record["labels"]))
                else:
                    if self.outdir is not None:
                        save_maps(Path(self.outdir), Path(record["image"]), record["label_map"])
                    answers.append(json.dumps(record["shares"]))
        key = "labels" if self.task == "classify" else "shares"
        return {"image": batch["image"], key: answers, "error": batch["error"]}


def _run(dataset, model, task: str, top_k: int, batch_size: int | None, concurrency: int | None, outdir=None):
    model_path = str(Path(model).resolve())
    cpus = int(ray.cluster_resources().get("CPU", 1))
    # one actor per CPU, each on one Numba thread: actors that share a machine with decoding tasks run side by side
    # without waiting for each other, where one actor on two threads waits at every parallel loop for the thread a
    # decoding task has pushed off its core (measured on 2 CPUs: 335 ms per batch of 8 on two threads)
    actors = concurrency or cpus
    # an actor runs as many Numba threads as its share of the cluster's cores, but reserves only half a CPU, and a
    # decoding task a quarter: logical CPUs are scheduling tokens, and with whole ones the actors could take every
    # CPU and leave none for the decoding that feeds them. (Unlike resources also keep Ray Data from fusing
    # decoding into the actors, where it would run one image after another.)
    threads = max(1, cpus // actors)
    # blocks of exactly one batch, so every model call but the last has the same shape: each new shape records a
    # new plan in the actor (a run through the ops in Python), and blocks of 5 rows gave batches of 8, 2, 5, ...
    dataset = dataset.repartition(target_num_rows_per_block=batch_size or BATCH, strict=True)
    decoded = dataset.map_batches(
        _decode_batch,
        fn_kwargs={"model_path": model_path},
        batch_size=batch_size or BATCH,
        batch_format="numpy",
        num_cpus=0.25,
    )
    return decoded.map_batches(
        _Infer,
        fn_constructor_kwargs={
            "model_path": model_path,
            "task": task,
            "top_k": top_k,
            "threads": threads,
            "outdir": None if outdir is None else str(Path(outdir).resolve()),
        },
        batch_size=batch_size or BATCH,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=0.5,
        # Numba's pool sized to the actor's share before it starts (set_num_threads only masks a larger one), and no
        # idle OpenBLAS pool beside it
        runtime_env={"env_vars": {"NUMBA_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1"}},
    )


def classify(dataset, model: str | os.PathLike, top_k: int = 5, batch_size: int | None = None, concurrency=None):
    """A Dataset of {"image", "labels" (JSON), "error"} for a Dataset with an "image" column of paths."""
    return _run(dataset, model, "classify", top_k, batch_size, concurrency)


def segment(dataset, model: str | os.PathLike, outdir=None, batch_size: int | None = None, concurrency=None):
    """A Dataset of {"image", "shares" (JSON), "error"} for a Dataset with an "image" column of paths; with
    `outdir` (a directory every node can write), each image's label map and overlay are saved there too."""
    return _run(dataset, model, "segment", 0, batch_size, concurrency, outdir)


def records(model_path: str, task: str, files: list[Path], top_k: int, address: str, outdir) -> Iterator[dict]:
    """A batch job's records, on Ray Data: a local instance for address "local", else that cluster's."""
    if not ray.is_initialized():
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
        out = classify(dataset, model_path, top_k)
    else:
        out = segment(dataset, model_path, outdir)
    for row in out.iter_rows():
        record = {"image": row["image"]}
        if row["error"]:
            record["error"] = row["error"]
        elif task == "classify":
            record["labels"] = json.loads(row["labels"])
        else:
            record["shares"] = json.loads(row["shares"])
        yield record
