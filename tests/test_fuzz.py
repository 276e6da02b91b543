"""The fuzz lane (issue 25): tools/fuzz.py with a fixed seed for a few minutes, and its kept reproducers, must end in
nothing but clean errors and correct answers; and the classes of what the campaigns found, one test each."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageOps

import tinyvit_engine as tve
from tinyvit_engine.formats import weights_file

ROOT = Path(__file__).resolve().parent.parent
FUZZ = [sys.executable, str(ROOT / "tools" / "fuzz.py")]
DEMO_FILE = ROOT / "weights" / "mobilevit-digits.safetensors"


def fuzz(*args, timeout=900):
    r = subprocess.run([*FUZZ, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    table = r.stdout[r.stdout.find("| kind |") :]
    return r, table


def test_reproducers_stay_fixed(tmp_path):
    """Every kept reproducer (tests/data/fuzz) ends as its case.json expects: a clean error, in a forked child."""
    r, table = fuzz("--replay", ROOT / "tests" / "data" / "fuzz", "--out", tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "| all | 21 |" in table, table


@pytest.mark.slow
def test_the_ci_campaign(tmp_path):
    """150 s of every kind with seed 0: no unclean error, crash, hang, pickle code run or silent change."""
    r, table = fuzz("--seconds", 150, "--seed", 0, "--out", tmp_path)
    print(table)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    counts = {line.split("|")[1].strip(): int(line.split("|")[2]) for line in table.splitlines()[2:]}
    assert all(counts[kind] >= 50 for kind in ("weights", "checkpoint", "bin", "image", "pixels", "config")), table
    assert not list(tmp_path.iterdir())  # no reproducer was kept


def engine_file(tmp_path, edit_tensors=None, edit_config=None) -> Path:
    """The demo engine file with tensors or config edited and its checksum made to fit (what a buggy converter, or
    a deliberate edit, would write)."""
    data = DEMO_FILE.read_bytes()
    metadata, entries = weights_file.parse(data, "demo")
    stored = weights_file.tensors(data, entries, "demo")
    if edit_tensors:
        edit_tensors(stored)
    if edit_config:
        config = json.loads(metadata["config"])
        edit_config(config)
        metadata = {**metadata, "config": json.dumps(config)}
    path = tmp_path / "edited.safetensors"
    path.write_bytes(weights_file.stamped(stored, metadata))
    return path


def test_nan_or_inf_in_a_weight_is_refused_at_load(tmp_path):
    def nan_bias(t):
        t["classifier.bias"] = t["classifier.bias"].copy()
        t["classifier.bias"][0] = np.nan

    with pytest.raises(tve.WeightsFormatError, match=r"tensor classifier.bias holds nan at 0"):
        tve.load(engine_file(tmp_path, edit_tensors=nan_bias))


def test_a_stored_config_asking_absurd_work_is_refused_at_load(tmp_path):
    """A weights file whose stored patch_size is 1000 took 52 s for one 64x64 image; now the load refuses it."""
    path = engine_file(tmp_path, edit_config=lambda c: c.update(patch_size=1000))
    with pytest.raises(tve.UnsupportedConfigError, match=r"patch_size = 1000 .*\[1, 32\].*LIMITS"):
        tve.load(path)


def test_every_decoder_failure_names_the_file(tmp_path, monkeypatch):
    """Whatever a decoder raises (struct.error inside exif_transpose was one) is InputError naming the file."""

    def broken(image):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    photo = ROOT / "tests" / "data" / "images" / "rocket.jpg"
    with pytest.raises(tve.InputError, match=r"rocket.jpg: cannot decode RGB image: struct.error: unpack requires"):
        tve.load_image(photo)


def test_a_processor_class_transformers_would_not_build_is_refused():
    with pytest.raises(tve.UnsupportedConfigError, match="image_processor_type -9223372036854775808"):
        tve.MobileViTImageProcessor.from_dict({"image_processor_type": -(2**63)})
    with pytest.raises(tve.UnsupportedConfigError, match="rescale_factor is null, but do_rescale is on"):
        tve.MobileViTImageProcessor.from_dict({"rescale_factor": None})
    assert not tve.MobileViTImageProcessor.from_dict({"do_resize": None}).do_resize  # null flags are off


def test_a_config_with_return_dict_false_still_classifies_segments_and_explains(tmp_path):
    """return_dict false in config.json makes a call answer a tuple, as in transformers; the engine's own
    classify, segment, explain and batch jobs ask for the fields they read whatever the config says."""
    import shutil

    demo = ROOT / "tests" / "data" / "demo"
    photo = ROOT / "examples" / "digit-3.png"
    for name, run in [
        ("mobilevit-digits", lambda m: m.classify(photo, top_k=1)),
        ("deeplabv3-mobilevit-digits", lambda m: m.segment(photo)["label_map"]),
    ]:
        path = shutil.copytree(demo / name, tmp_path / name)
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "return_dict": False}))
        model = tve.load(path)
        assert isinstance(model(model.processor(photo)), tuple)
        assert run(model) is not None
    from tinyvit_engine.api.explain import heatmaps

    assert heatmaps(tve.load(tmp_path / "mobilevit-digits"), photo)[1]
