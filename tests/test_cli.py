"""The `tinyvit` command, run as a user runs it: a subprocess on real photos and the shipped demo models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hf import save_checkpoint, v1_model
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = Path(__file__).parent / "data" / "images"
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))


def tinyvit(*args, env=None, ok=True):
    r = subprocess.run(
        [TINYVIT, *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def assert_user_error(r, *words):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(v1_model("xx-small", seed=31, num_labels=4), tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("command", ["convert", "classify", "segment", "info"])
def test_help_has_an_example(command):
    assert "example:" in tinyvit(command, "--help").stdout


def test_convert_info_classify(tmp_path, checkpoint):
    out = tmp_path / "m.safetensors"
    assert "wrote" in tinyvit("convert", checkpoint, "-o", out).stdout
    info = tinyvit("info", out).stdout
    for expected in (
        "family: mobilevit",
        "task: image-classification",
        "labels: 4",
        "format: tinyvit-engine v3, float32 weights",
    ):
        assert expected in info
    lines = tinyvit("classify", PHOTOS / "chelsea.png", PHOTOS / "rocket.jpg", "--model", out, "--top-k", "2").stdout
    assert len(lines.splitlines()) == 2 and "chelsea.png: LABEL_" in lines
    records = [json.loads(x) for x in tinyvit("classify", PHOTOS, "--model", out, "--json").stdout.splitlines()]
    assert len(records) == 4 and all(len(r["labels"]) == 4 for r in records)


def test_a_directory_of_many_images(tmp_path, checkpoint):
    # (progress, which shows on a terminal only: tests/test_batch.py)
    for i in range(12):
        Image.open(PHOTOS / "chelsea.png").resize((64 + i, 48)).save(tmp_path / f"{i:02}.png")
    r = tinyvit("classify", tmp_path, "--model", checkpoint, "--top-k", "1")
    assert len(r.stdout.splitlines()) == 12


def test_convert_a_hub_id_from_the_local_cache_offline(tmp_path, checkpoint):
    """A Hub id resolves through huggingface_hub's cache layout; HF_HUB_OFFLINE=1 keeps it off the network."""
    snapshot = tmp_path / "hub" / "models--apple--mobilevit-xx-small" / "snapshots" / "0123abcd"
    shutil.copytree(checkpoint, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    r = tinyvit("convert", "apple/mobilevit-xx-small", "-o", tmp_path / "m.safetensors", env=env)
    assert "wrote" in r.stdout and (tmp_path / "m.safetensors").exists()
    r = tinyvit("convert", "apple/not-cached", "-o", tmp_path / "x.safetensors", env=env, ok=False)
    assert_user_error(r, "apple/not-cached", "local checkpoint directory")
    assert not (tmp_path / "x.safetensors").exists()


def test_user_errors_are_one_line(tmp_path, checkpoint):
    assert_user_error(tinyvit("classify", tmp_path / "nope.png", "--model", checkpoint, ok=False), "nope.png")
    assert_user_error(tinyvit("info", tmp_path / "nope.safetensors", ok=False), "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a weights file")
    assert_user_error(tinyvit("info", tmp_path / "bad.safetensors", ok=False), "bad.safetensors")
    assert_user_error(
        tinyvit("segment", PHOTOS / "chelsea.png", "--model", checkpoint, "-o", tmp_path, ok=False),
        "semantic-segmentation",
    )
    r = tinyvit("--debug", "info", tmp_path / "bad.safetensors", ok=False)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_classify_with_the_demo_model():
    """The shipped digits classifier is the default model, and it reads the example digits correctly."""
    examples = sorted((ROOT / "examples").glob("digit-*.png"))
    assert examples
    for line, path in zip(tinyvit("classify", *examples, "--top-k", "1").stdout.splitlines(), examples, strict=True):
        digit = path.stem.split("-")[1]
        assert line.startswith(f"{path}: {digit} ("), line


def test_segment_with_the_demo_model(tmp_path):
    scene = ROOT / "examples" / "scene-0.png"
    r = tinyvit("segment", scene, "-o", tmp_path)
    assert r.stdout.startswith(f"{scene}: background ")
    labels = Image.open(tmp_path / "scene-0.labels.png")
    overlay = Image.open(tmp_path / "scene-0.overlay.png")
    assert labels.mode == "P" and labels.size == overlay.size == Image.open(scene).size
