"""Batch jobs on Ray Data (issue 15), on a local Ray instance with 2 CPUs: the same labels as the single-process
job, bad files reported the same way, and an actor killed in the middle of a job without losing or repeating an
image. Ray must be installed (the ray extra): these tests fail, never skip, without it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from PIL import Image

import tinyvit_engine.jobs.ray as tve_ray

pytestmark = pytest.mark.slow  # (the quick lane, -m "not slow", leaves these out)

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted(p for p in (ROOT / "tests" / "data" / "images").glob("*.*") if p.suffix != ".md")
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))
DEMO = ROOT / "weights" / "mobilevit-digits.safetensors"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def photos(root: Path, n: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"{i:03}.png"
        Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB").resize((80 + i % 50, 70)).save(path)
        paths.append(path)
    (root / "broken.png").write_bytes(paths[0].read_bytes()[:300])
    return [*paths, root / "broken.png"]


def records(path: Path) -> dict[str, dict]:
    return {Path(r["image"]).name: r for r in map(json.loads, path.read_text().splitlines())}


def test_the_ray_job_gives_the_single_process_answers(tmp_path):
    photos(tmp_path / "photos", 30)
    plain, on_ray = tmp_path / "plain.jsonl", tmp_path / "ray.jsonl"
    a = subprocess.run([TINYVIT, "classify", tmp_path / "photos", "--output", plain], capture_output=True, text=True)
    b = subprocess.run(
        [TINYVIT, "classify", tmp_path / "photos", "--output", on_ray, "--ray"], capture_output=True, text=True
    )
    assert a.returncode == b.returncode == 1  # the broken file
    assert [line for line in b.stderr.splitlines() if "broken.png" in line] == [
        line for line in a.stderr.splitlines() if "broken.png" in line
    ]
    want, got = records(plain), records(on_ray)
    assert set(got) == set(want) and len(got) == 31
    for name, rec in want.items():
        if "error" in rec:
            assert got[name]["error"] == rec["error"]
        else:
            assert [x["label"] for x in got[name]["labels"]] == [x["label"] for x in rec["labels"]], name


def test_a_killed_actor_loses_and_repeats_nothing(local_ray, tmp_path):
    paths = photos(tmp_path / "photos", 240)
    dataset = ray.data.from_items([{"image": str(p)} for p in paths])
    rows, killed = [], False
    for row in tve_ray.classify(dataset, DEMO, top_k=1, batch_size=4).iter_rows():
        rows.append(row)
        if len(rows) == 40 and not killed:
            workers = [p for p in Path("/proc").glob("[0-9]*") if b"MapWorker(MapBatches(_Infer)" in _cmdline(p)]
            assert workers, "no inference actor to kill"
            os.kill(int(workers[0].name), signal.SIGKILL)
            killed = True
    assert killed
    names = sorted(Path(r["image"]).name for r in rows)
    assert names == sorted(p.name for p in paths)  # every image exactly once
    assert sum(1 for r in rows if r["error"]) == 1
    assert all(json.loads(r["labels"]) for r in rows if not r["error"])


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
