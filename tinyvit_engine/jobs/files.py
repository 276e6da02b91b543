"""The files of a job: what to read (files, folders, @lists), what is already done (--resume), where the records go
(JSON Lines or Parquet, each record whole and flushed as it finishes), and progress on a terminal."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import TinyVitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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
