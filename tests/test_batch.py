"""Batch jobs (issue 15): bad files reported and skipped, results to JSON Lines as they finish, resume after a kill
with every image exactly once, @lists, worker processes, progress on a terminal, and memory flat under load."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import resource
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinyvit_engine as tve

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted(p for p in (ROOT / "tests" / "data" / "images").glob("*.*") if p.suffix != ".md")
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))
DEMO = ROOT / "weights" / "mobilevit-digits.safetensors"


def tinyvit(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([TINYVIT, *map(str, args)], capture_output=True, text=True, **kwargs)


@pytest.fixture()
def folder(tmp_path):
    """Five good images (one in a subfolder), a truncated PNG, an empty JPEG and a text file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, photo in enumerate(PHOTOS[:4]):
        Image.open(photo).convert("RGB").resize((90 + 7 * i, 70)).save(root / f"{i}.png")
    Image.open(PHOTOS[0]).convert("RGB").resize((150, 120)).save(root / "sub" / "4.jpg")
    (root / "sub" / "truncated.png").write_bytes((root / "0.png").read_bytes()[:400])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_bad_files_never_sink_the_job(folder, tmp_path):
    out = tmp_path / "results.jsonl"
    r = tinyvit("classify", folder, "--output", out, "--top-k", "2")
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 5  # every good image answered
    errors = [line for line in r.stderr.splitlines() if "truncated.png" in line or "empty.jpg" in line]
    assert len(errors) == 2 and all(line.startswith("tinyvit classify: ") for line in errors)
    assert "2 of 7 images failed" in r.stderr.splitlines()[-1]
    got = {Path(rec["image"]).name: rec for rec in records(out)}
    assert set(got) == {"0.png", "1.png", "2.png", "3.png", "4.jpg", "truncated.png", "empty.jpg"}  # no notes.txt
    assert "error" in got["truncated.png"] and "error" in got["empty.jpg"]
    model = tve.load(DEMO)
    for name in ("0.png", "4.jpg"):
        path = next(folder.rglob(name))
        assert got[name]["labels"] == model.classify(str(path), top_k=2)


@pytest.mark.slow
def test_resume_after_a_kill_records_every_image_once(tmp_path):
    images = tmp_path / "many"
    images.mkdir()
    for i in range(400):
        Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB").resize((96 + i % 40, 80)).save(images / f"{i:03}.png")
    out = tmp_path / "results.jsonl"
    job = subprocess.Popen([TINYVIT, "classify", images, "--output", out], stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while (not out.exists() or len(out.read_bytes().splitlines()) < 20) and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    killed_with = len(records(out))
    assert 20 <= killed_with < 400, "the job should have been killed midway"
    with open(out, "ab") as f:
        f.write(b'{"image": "torn')  # as if the kill had come in the middle of a write
    r = tinyvit("classify", images, "--output", out, "--resume")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 400 - killed_with  # only the rest
    names = [Path(rec["image"]).name for rec in records(out)]
    assert sorted(names) == sorted(p.name for p in images.iterdir())  # each image exactly once


def test_a_list_of_paths_and_worker_processes(folder, tmp_path):
    good = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".png", ".jpg") and p.stat().st_size > 1000)
    listing = tmp_path / "list.txt"
    listing.write_text("# five photos\n" + "\n".join(good) + "\n\n")
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert tinyvit("classify", f"@{listing}", "--output", one).returncode == 0
    assert tinyvit("classify", f"@{listing}", "--output", two, "--workers", "2").returncode == 0
    by_image = {rec["image"]: rec["labels"] for rec in records(one)}
    assert len(by_image) == 5
    for rec in records(two):
        assert rec["labels"][0]["label"] == by_image[rec["image"]][0]["label"]
        np.testing.assert_allclose(rec["labels"][0]["score"], by_image[rec["image"]][0]["score"], rtol=1e-5)


def test_segment_writes_maps_and_shares(folder, tmp_path):
    out = tmp_path / "shares.jsonl"
    r = tinyvit("segment", folder, "-o", tmp_path / "maps", "--output", out)
    assert r.returncode == 1 and "2 of 7 images failed" in r.stderr
    good = [rec for rec in records(out) if "shares" in rec]
    assert len(good) == 5 and all(abs(sum(rec["shares"].values()) - 1) < 1e-4 for rec in good)
    assert len(list((tmp_path / "maps").glob("*.labels.png"))) == 5


def test_progress_on_a_terminal_only(folder):
    assert "7/7" not in tinyvit("classify", folder).stderr  # a pipe: no progress
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    job = subprocess.Popen([TINYVIT, "classify", folder], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    job.wait()
    os.close(leader)
    assert b"7/7" in shown and (b"img/s" in shown or b"/s" in shown)


def test_memory_stays_flat_and_threads_agree():
    """2,000 inferences in one process: resident memory grows less than 10 MB after warm-up; four threads calling
    one model at once get what one thread gets."""
    model = tve.load(DEMO)
    x = model.processor([str(p) for p in PHOTOS[:2]])
    want = model(x).logits
    for _ in range(50):
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2000):
        model(x)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert growth_mb < 10, growth_mb
    got = [None] * 4

    def call(i):
        for _ in range(50):
            got[i] = model(x).logits

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in got:
        np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("threads", [2, 4])
def test_streams_give_the_one_call_answers_in_order(folder, threads):
    """More files than a batch on 2+ threads: two streams, each decoding its batch and running the model on it (on
    half the threads); the records are those of one call at a time, in the files' order, bad files in place."""
    from tinyvit_engine.jobs import BATCH, expand, results, streams

    files = expand([str(folder)]) * 3  # 21 files: batches straddle the bad ones
    assert streams(threads, len(files))[0] == 2 and len(files) > 2 * BATCH
    model = tve.load(DEMO)
    one = list(results(model, "classify", files, 3, 1))
    two = list(results(model, "classify", files, 3, threads))
    assert [r["image"] for r in two] == [str(f) for f in files]
    assert two == one
    seg = tve.load(ROOT / "weights" / "deeplabv3-mobilevit-digits.safetensors")
    maps_one = list(results(seg, "segment", files, 0, 1))
    maps_two = list(results(seg, "segment", files, 0, threads))
    for a, b in zip(maps_one, maps_two, strict=True):
        assert a.get("shares") == b.get("shares") and a.get("error") == b.get("error")
        if "label_map" in a:
            np.testing.assert_array_equal(a["label_map"], b["label_map"])
