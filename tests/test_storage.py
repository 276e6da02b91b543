"""Smaller weight files (issue 14): float16 and int8 storage for both families and both tasks: sizes, error against
float32, the CLI flag, and files whose stored dtypes or scales are wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hf import save_checkpoint, v1_model, v2_model
from safetensors.numpy import save

import tinyvit_engine as tve
from tinyvit_engine.formats import weights_file

ROOT = Path(__file__).resolve().parent.parent
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))
# max |logits - float32 logits| / max |float32 logits| on these random-weight models, about 1.5x what was measured
# (README). Random MobileViTV2s amplify weight error far more than V1s (float16 alone moves their logits 1-2%): a
# separable attention's one query channel, softmaxed over all patches, turns small changes into different weights.
# The tensors themselves are held exactly to their rounding below.
BOUND = {("v1", "float16"): 1e-2, ("v1", "int8"): 0.2, ("v2", "float16"): 0.05, ("v2", "int8"): 0.9}


@pytest.fixture(scope="module", params=["v1-classification", "v1-segmentation", "v2-classification", "v2-segmentation"])
def checkpoint(request, tmp_path_factory):
    family, task = request.param.split("-")
    kw = dict(task=task, num_labels=6, **({"output_stride": 16} if task == "segmentation" else {}))
    model = v1_model("xx-small", seed=3, **kw) if family == "v1" else v2_model(0.5, seed=3, **kw)
    return family, save_checkpoint(model, tmp_path_factory.mktemp(request.param))


def test_float16_and_int8_files(checkpoint, tmp_path):
    family, checkpoint = checkpoint
    x = np.random.default_rng(1).random((2, 3, 128, 96), dtype=np.float32)
    files = {d: tve.convert(checkpoint, tmp_path / f"{d}.safetensors", dtype=d) for d in ("float32", "float16", "int8")}
    exact = tve.load(files["float32"])
    want = exact(x).logits
    size = {d: f.stat().st_size for d, f in files.items()}
    assert size["float16"] < 0.55 * size["float32"] and size["int8"] < 0.32 * size["float32"]
    for dtype in ("float16", "int8"):
        model = tve.load(files[dtype])
        assert all(t.dtype == np.float32 for t in model.executor.params.values())  # widened once, at loading
        for name, w in exact.executor.params.items():
            if w.ndim < 2 or name.endswith("_panels"):  # biases stay float32; packed panels are derived
                continue
            q = model.executor.params[name]
            if dtype == "float16":
                np.testing.assert_array_equal(q, w.astype(np.float16).astype(np.float32), err_msg=name)
            else:  # within half a step of its channel's scale
                step = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0) / 127
                assert (np.abs(q - w) <= step / 2 * 1.0001 + 1e-12).all(), name
        got = model(x).logits
        assert np.abs(got - want).max() / np.abs(want).max() <= BOUND[family, dtype], dtype
        metadata, entries = weights_file.parse(files[dtype].read_bytes(), dtype)
        assert metadata["storage"] == dtype and metadata["format_version"] == "3"
        stored = {entry[0] for entry in entries.values()}
        assert stored == {"F32", "F16" if dtype == "float16" else "I8"}


def test_published_xx_small_sizes(tmp_path):
    """mobilevit-xx-small with Apple's 1000 labels: at most 1.5 MB in int8 and 2.7 MB in float16."""
    checkpoint = save_checkpoint(v1_model("xx-small", seed=4, num_labels=1000), tmp_path / "hf")
    assert tve.convert(checkpoint, tmp_path / "i8.safetensors", dtype="int8").stat().st_size <= 1.5e6
    assert tve.convert(checkpoint, tmp_path / "f16.safetensors", dtype="float16").stat().st_size <= 2.7e6


def test_the_command_line(checkpoint, tmp_path):
    checkpoint = checkpoint[1]
    out = tmp_path / "m.safetensors"
    r = subprocess.run([TINYVIT, "convert", checkpoint, "-o", out, "--dtype", "int8"], capture_output=True, text=True)
    assert r.returncode == 0 and "int8" in r.stdout
    info = subprocess.run([TINYVIT, "info", out], capture_output=True, text=True, check=True).stdout
    assert "v3, int8 weights" in info and f"{out.stat().st_size / 1e6:.2f} MB" in info
    bad = tmp_path / "bad.safetensors"
    r = subprocess.run([TINYVIT, "convert", checkpoint, "-o", bad, "--dtype", "int4"], capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "int4" in r.stderr
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))
    with pytest.raises(ValueError, match="bfloat16"):
        tve.convert(checkpoint, bad, dtype="bfloat16")
    assert not bad.exists()


@pytest.mark.parametrize("version", ["1", "2"])
def test_version_1_and_2_files_still_load(tmp_path, version):
    """Files written before the checksum (version 3): version 1 (float32, no storage key) and version 2."""
    demo = ROOT / "weights" / "mobilevit-digits.safetensors"

    def older(tensors, metadata):
        del metadata["crc32"]
        metadata["format_version"] = version
        if version == "1":
            del metadata["storage"]

    old = rewrite(demo, tmp_path / "old.safetensors", older)
    metadata, _ = weights_file.parse(old.read_bytes(), "old")
    assert metadata["format_version"] == version and "crc32" not in metadata
    x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    np.testing.assert_array_equal(tve.load(old)(x).logits, tve.load(demo)(x).logits)


def rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of an engine file with its stored tensors and metadata passed through change(tensors, metadata)."""
    metadata, entries = weights_file.parse(src.read_bytes(), "src")
    tensors = weights_file.tensors(src.read_bytes(), entries, "src")
    change(tensors, metadata)
    dst.write_bytes(
        weights_file.stamped(tensors, metadata) if "crc32" in metadata else save(tensors, metadata=metadata)
    )
    return dst


def bad_files():
    def first(tensors, dtype):
        return next(k for k, v in tensors.items() if v.dtype == dtype and not k.endswith("::scale"))

    def scale_of(tensors):
        return next(k for k in tensors if k.endswith("::scale"))

    def short_scale(t, m):
        k = scale_of(t)
        t[k] = t[k][:-1].copy()

    def nan_scale(t, m):
        k = scale_of(t)
        t[k] = t[k].copy()
        t[k][0] = np.nan

    def zero_scale(t, m):
        k = scale_of(t)
        t[k] = np.zeros_like(t[k])

    def float64_scale(t, m):
        k = scale_of(t)
        t[k] = t[k].astype(np.float64)

    def no_scale(t, m):
        del t[scale_of(t)]

    def stray_scale(t, m):
        k = scale_of(t)
        t["nothing::scale"] = t[k]

    def int8_bias(t, m):
        k = next(k for k, v in t.items() if v.ndim == 1 and not k.endswith("::scale"))
        t[k] = t[k].astype(np.int8)

    def int8_in_float32_file(t, m):
        m["storage"] = "float32"

    def unknown_storage(t, m):
        m["storage"] = "int4"

    def float16_in_int8_file(t, m):
        k = first(t, np.int8)
        t[k] = t[k].astype(np.float16)

    return {
        "scale of the wrong length": (short_scale, "::scale.*one scale per output channel"),
        "NaN scale": (nan_scale, "not finite and positive"),
        "zero scale": (zero_scale, "not finite and positive"),
        "float64 scale": (float64_scale, "F64"),
        "missing scale": (no_scale, "has no .*::scale"),
        "scale of nothing": (stray_scale, "nothing::scale scales a weight that is not in the file"),
        "int8 bias": (int8_bias, "biases and norm parameters are float32"),
        "int8 in a float32 file": (int8_in_float32_file, "I8, but a float32 weights file holds only F32"),
        "unknown storage": (unknown_storage, "storage dtype 'int4'"),
        "float16 in an int8 file": (float16_in_int8_file, "F16, but a int8 weights file"),
    }


@pytest.mark.parametrize("case", list(bad_files()))
def test_bad_quantized_files_are_refused(tmp_path, case):
    checkpoint = save_checkpoint(v1_model("xx-small", seed=5, num_labels=3), tmp_path / "hf")
    good = tve.convert(checkpoint, tmp_path / "good.safetensors", dtype="int8")
    change, words = bad_files()[case]
    bad = rewrite(good, tmp_path / "bad.safetensors", change)
    with pytest.raises(tve.WeightsFormatError, match=words) as e:
        tve.load(bad)
    assert "bad.safetensors" in str(e.value) and "\n" not in str(e.value)


def test_float16_overflow_is_refused(tmp_path):
    tensors = {"w": np.full((2, 2), 1e6, np.float32)}
    with pytest.raises(tve.WeightsFormatError, match="do not fit in float16"):
        weights_file.write(tmp_path / "x.safetensors", tensors, {}, None, storage="float16")
    assert not (tmp_path / "x.safetensors").exists()
