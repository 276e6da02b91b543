"""Bad input of every kind gets one clear exception (issue 7): never a segfault, a hang, an error from deep inside, or
a silently wrong answer.

Whatever may reach a jitted kernel (pixel_values, images, a model on tiny inputs) runs in a fresh interpreter, so that
a crash fails the test instead of killing the run. Covered elsewhere and not repeated here: hostile and corrupt
pytorch_model.bin files, including a pickle that would write a file, and zips that are not checkpoints
(test_torchbin.py); missing, empty, truncated and non-image files, decompression bombs, every PIL mode, animated GIFs
and bad image arrays (test_processor.py); a missing file and a non-safetensors file on the command line (test_cli.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hf import assert_parity, pixels, reference_outputs, save_checkpoint, v1_model
from safetensors.numpy import load_file, save, save_file
from tinyvit_engine.kernels import KernelArgumentError

import tinyvit_engine as tve
from tinyvit_engine.errors import InputError, UnsupportedConfigError, WeightsFormatError
from tinyvit_engine.formats import read_checkpoint, weights_file

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "mobilevit-digits.safetensors"  # a real engine file: the 64x64 digits classifier
CHECKPOINT = ROOT / "tests" / "data" / "demo" / "mobilevit-digits"  # the checkpoint it was converted from
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))


def isolated(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `code` after `import numpy as np, tinyvit_engine as tve` in a fresh interpreter; an exception is printed
    as one line `Type: message` on stderr with exit code 3, so a crash (a negative exit code) is told apart."""
    script = (
        "import sys\nimport numpy as np, tinyvit_engine as tve\ntry:\n"
        + textwrap.indent(code, "    ")
        + ("\nexcept Exception as e:\n    print(f'{type(e).__name__}: {e}', file=sys.stderr)\n    sys.exit(3)\n")
    )
    return subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def assert_raises_isolated(code: str, error: type[Exception], *words: str) -> str:
    """`code` raises exactly `error`, whose one-line message contains `words`; the message is returned."""
    r = isolated(code)
    assert r.returncode == 3, f"exit code {r.returncode} (a crash if negative):\n{r.stderr[-3000:]}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    name, _, message = lines[0].partition(": ")
    assert name == error.__name__, lines[0]
    for w in words:
        assert w in message, lines[0]
    return message


# --- pixel_values ---------------------------------------------------------------------------------------------------

LOAD = f"model = tve.load({str(WEIGHTS)!r})\n"


@pytest.mark.parametrize(
    "make, words",
    [
        ("np.random.rand(3, 64, 64).astype(np.float32)", ["4 dimensions", "(3, 64, 64)"]),
        ("np.random.rand(1, 1, 3, 64, 64).astype(np.float32)", ["4 dimensions"]),
        ("np.random.rand(1, 4, 64, 64).astype(np.float32)", ["3 channels", "(1, 4, 64, 64)"]),
        ("np.random.rand(2, 64, 64, 3).astype(np.float32)", ["3 channels"]),  # channels-last by mistake
        ("np.zeros((0, 3, 64, 64), np.float32)", ["empty", "(0, 3, 64, 64)"]),
        ("np.zeros((1, 3, 0, 64), np.float32)", ["empty", "(1, 3, 0, 64)"]),
        ("np.zeros((1, 3, 64, 0), np.float32)", ["empty"]),
        ("np.random.randint(0, 255, (1, 3, 64, 64), dtype=np.uint8)", ["uint8", "processor"]),
        ("np.random.randint(0, 2, (1, 3, 64, 64))", ["int64", "processor"]),
        ("np.random.rand(1, 3, 64, 64) > 0.5", ["bool", "processor"]),
        ("np.random.rand(1, 3, 64, 64).astype(np.complex64)", ["complex64", "processor"]),
        ("np.full((1, 3, 64, 64), 'a')", ["<U1"]),
        (
            "np.where(np.arange(3 * 64 * 64).reshape(1, 3, 64, 64) == 7, np.nan, 0.5).astype(np.float32)",
            ["1 value(s)", "NaN"],
        ),
        ("np.full((2, 3, 64, 64), np.inf, np.float32)", ["24576 value(s)", "infinite"]),
        ("np.full((1, 3, 64, 64), 1e300)", ["overflow float32"]),  # finite float64, infinite as float32
        ("np.random.rand(1, 3, 64, 64).tolist()", ["numpy array", "list", "np.asarray"]),
        ("__import__('torch').rand(1, 3, 64, 64)", ["numpy array", "Tensor"]),
    ],
    ids=[
        "3d",
        "5d",
        "4-channels",
        "channels-last",
        "empty-batch",
        "zero-height",
        "zero-width",
        "uint8",
        "int64",
        "bool",
        "complex",
        "str",
        "nan",
        "inf",
        "float64-overflow",
        "list",
        "torch",
    ],
)
def test_bad_pixel_values_are_refused(make, words):
    assert_raises_isolated(LOAD + f"model({make})", InputError, "pixel_values", *words)


def test_pixel_values_that_are_cast_or_copied_give_the_float32_answer():
    """float16 and float64 are cast to float32; strided, Fortran-ordered and read-only arrays are copied."""
    r = isolated(
        LOAD
        + textwrap.dedent("""
        x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
        want = model(x).logits
        wide = np.random.default_rng(1).random((2, 3, 64, 128), dtype=np.float32)
        readonly = x.copy()
        readonly.flags.writeable = False
        same = {"float64": x.astype(np.float64), "strided": wide[:, :, :, ::2], "fortran": np.asfortranarray(x),
                "readonly": readonly, "flipped": x[:, ::-1].copy()[:, ::-1]}
        for name, v in same.items():
            assert np.array_equal(model(v).logits, model(np.ascontiguousarray(v, np.float32)).logits), name
        assert np.array_equal(model(same["float64"]).logits, want)
        half = x.astype(np.float16)
        assert np.array_equal(model(half).logits, model(half.astype(np.float32)).logits)
        assert not readonly.flags.writeable and np.isfinite(want).all()
        print("ok")
    """)
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


@pytest.fixture(scope="module")
def small_v1(tmp_path_factory):
    """A small random MobileViT as tests/hf.py builds them, saved as a checkpoint, with its torch model."""
    kwargs = {
        "hidden_sizes": [16, 24, 32],
        "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
        "num_attention_heads": 2,
        "expand_ratio": 2.0,
    }
    model = v1_model(kwargs, seed=3, num_labels=5)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("small-v1"))


@pytest.mark.slow  # builds and runs a torch model: about 8 s
def test_tiny_inputs_match_transformers(small_v1, tmp_path):
    """MobileViT is defined for any H, W >= 1: a 1x1 and a 3x5 input run and match transformers."""
    torch_model, checkpoint = small_v1
    inputs = {"1x1": pixels(2, 1, 1, seed=1), "3x5": pixels(1, 3, 5, seed=2)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    r = isolated(
        textwrap.dedent(f"""
        model = tve.load({str(checkpoint)!r})
        inputs = np.load({str(tmp_path / "inputs.npz")!r})
        for name in inputs.files:
            out = model(inputs[name], output_hidden_states=True)
            hidden = {{f"hidden_states.{{i}}": h for i, h in enumerate(out.hidden_states)}}
            np.savez({str(tmp_path)!r} + f"/{{name}}.npz", logits=out.logits, **hidden)
    """)
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name, x in inputs.items():
        got = dict(np.load(tmp_path / f"{name}.npz"))
        assert_parity(got, reference_outputs(torch_model, x))


def test_mobilevitv2_below_its_smallest_input_is_refused():
    """MobileViTV2 unfolds 2x2 patches of its stride-32 map, so it needs H, W >= 33 (transformers raises too)."""
    assert_raises_isolated(
        textwrap.dedent("""
        from tinyvit_engine.config import parse_config
        from tinyvit_engine.models import build
        config = {"model_type": "mobilevitv2", "width_multiplier": 0.5, "num_labels": 3}
        rng = np.random.default_rng(0)
        params = {k: rng.standard_normal(s).astype(np.float32) for k, s in build(parse_config(config)).params().items()}
        model = tve.Model(config, params, None)
        assert np.isfinite(model(rng.random((1, 3, 33, 40), dtype=np.float32)).logits).all()
        model(rng.random((1, 3, 20, 40), dtype=np.float32))
    """),
        KernelArgumentError,
        "smaller than one 2x2 patch",
    )


# --- images (the rest is in test_processor.py) ----------------------------------------------------------------------


def test_tiny_and_huge_images_classify():
    r = isolated(
        LOAD
        + textwrap.dedent("""
        from PIL import Image
        rng = np.random.default_rng(0)
        tiny = Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8))
        huge = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
        for top in model.classify([tiny, huge], top_k=3):
            assert len(top) == 3 and all(0 <= t["score"] <= 1 for t in top), top
        print("ok")
    """)
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_a_thin_strip_that_would_resize_to_a_bomb_is_refused():
    """A thin strip resized to the short side explodes: 20000 x 1 at the demo model's 64 is 1280000 x 64 pixels, over
    the limit set here (with Apple's 288, a 2000 x 1 strip already passes Pillow's default limit)."""
    assert_raises_isolated(
        LOAD
        + textwrap.dedent("""
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = 1_000_000
        model.classify(Image.new("RGB", (20000, 1)))
    """),
        InputError,
        "20000x1 image",
        "decompression-bomb limit",
    )


# --- weights files --------------------------------------------------------------------------------------------------

GOOD = WEIGHTS.read_bytes()
HEADER_LEN = int.from_bytes(GOOD[:8], "little")


def header_of(data: bytes = GOOD) -> dict:
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])


def with_header(header: dict, data: bytes = GOOD) -> bytes:
    """The file with its JSON header replaced (the tensor data kept as is), its checksum made to fit, so that the
    check under test is the one that speaks (test_a_changed_byte_fails_the_checksum covers the checksum)."""
    n = int.from_bytes(data[:8], "little")
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and "crc32" in meta:
        try:
            header = {
                **header,
                "__metadata__": {**meta, "crc32": weights_file.checksum(header, memoryview(data)[8 + n :])},
            }
        except (TypeError, ValueError):  # a header the checksum cannot even read: left as it is
            pass
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + n :]


def restamped(data: bytes) -> bytes:
    """A whole file with its checksum made to fit."""
    return with_header(header_of(data), data)


def read_bad(tmp_path, data: bytes, *words: str) -> str:
    (tmp_path / "bad.safetensors").write_bytes(data)
    with pytest.raises(WeightsFormatError) as e:
        weights_file.read(tmp_path / "bad.safetensors")
    message = str(e.value)
    assert "\n" not in message and "bad.safetensors" in message
    for w in words:
        assert w in message
    return message


def peak_memory(fn) -> int:
    """The peak of Python's allocations while fn() runs, in bytes."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def first_tensor(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def test_the_real_file_reads_as_safetensors_reads_it():
    tensors, config, pre = weights_file.read(WEIGHTS)
    assert config["model_type"] == "mobilevit" and pre["crop_size"] == {"height": 64, "width": 64}
    assert all(t.dtype == np.float32 and t.flags.c_contiguous and t.flags.aligned for t in tensors.values())
    reference = load_file(WEIGHTS)
    assert tensors.keys() == reference.keys() and all(np.array_equal(tensors[k], reference[k]) for k in reference)


def test_empty_file(tmp_path):
    read_bad(tmp_path, b"", "empty")


@pytest.mark.parametrize(
    "at", [3, 8, 9, HEADER_LEN // 2, 8 + HEADER_LEN, 8 + HEADER_LEN + 1, len(GOOD) // 2, len(GOOD) - 1]
)
def test_truncated_file(tmp_path, at):
    read_bad(tmp_path, GOOD[:at])


def test_random_bytes(tmp_path):
    read_bad(tmp_path, np.random.default_rng(0).bytes(5000), "not a valid safetensors file")


def test_a_safetensors_file_that_is_not_ours(tmp_path):
    read_bad(
        tmp_path, (CHECKPOINT / "model.safetensors").read_bytes(), "not a tinyvit-engine weights file", "tve.convert"
    )


def test_another_format_version(tmp_path):
    header = header_of()
    header["__metadata__"]["format_version"] = "4"
    read_bad(
        tmp_path, with_header(header), "format version '4'", "reads versions 1, 2, 3", "convert the checkpoint again"
    )


def test_huge_header_length_allocates_nothing(tmp_path):
    start = time.perf_counter()
    peak = peak_memory(
        lambda: read_bad(
            tmp_path, (2**63).to_bytes(8, "little") + GOOD[8:], "header length says 9223372036854775808 bytes"
        )
    )
    assert time.perf_counter() - start < 1 and peak < 3 * len(GOOD)  # the file itself, not what it claims


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t: t.update(data_offsets=[0, 2**62]), ["run past"]),
        (lambda t: t.update(data_offsets=[2**62, 2**62 + 40]), ["run past"]),
        (lambda t: t.update(data_offsets=[-40, 0]), ["not [begin, end]"]),
        (lambda t: t.update(shape=[2**40, 2**40]), ["hold no F32 tensor of shape (1099511627776, 1099511627776)"]),
        (lambda t: t.update(shape=[2**40] * 100_000), ["hold no F32 tensor of shape (1099511627776,"]),
        (lambda t: t.update(shape=[-10]), ["is not a list of sizes"]),
        (lambda t: t.update(shape="10"), ["is not a list of sizes"]),
        (lambda t: t.update(dtype="Q7"), ["dtype 'Q7' is not a safetensors dtype"]),
        (lambda t: t.update(dtype="F64"), ["hold no F64 tensor"]),
        (lambda t: t.pop("data_offsets"), ["data_offsets None"]),
    ],
    ids=[
        "end-past-eof",
        "begin-past-eof",
        "negative",
        "huge-shape",
        "many-huge-dims",
        "negative-shape",
        "shape-not-list",
        "dtype-unknown",
        "dtype-size",
        "no-offsets",
    ],
)
def test_header_claims_that_do_not_fit_the_file(tmp_path, edit, words):
    header = header_of()
    edit(header[first_tensor(header)])
    data = with_header(header)
    # memory in proportion to the file (a 100000-dimension header parses to a few MB), not to what it claims (TBs)
    assert peak_memory(lambda: read_bad(tmp_path, data, first_tensor(header), *words)) < 10 * len(data)


def test_overlapping_tensors(tmp_path):
    header = header_of()
    a, b = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])[:2]
    begin, end = header[b]["data_offsets"]
    header[b]["data_offsets"] = [header[a]["data_offsets"][0] + 4, header[a]["data_offsets"][0] + 4 + end - begin]
    read_bad(tmp_path, with_header(header), "a gap or an overlap")


def test_a_tensor_of_another_dtype_in_our_format(tmp_path):
    data = save({"w": np.ones(4, np.float16)}, metadata=header_of()["__metadata__"])
    read_bad(tmp_path, restamped(data), "tensor w is F16, but a float32 weights file holds only F32")


@pytest.mark.parametrize("where", ["header", "data", "last byte"])
def test_a_changed_byte_fails_the_checksum(tmp_path, where):
    """Version 3 files carry a CRC-32 of header and data: one flipped bit anywhere is refused, naming the problem,
    where it would otherwise load and answer differently without a word."""
    data = bytearray(GOOD)
    at = {"header": GOOD.index(b"silu") + 1, "data": HEADER_LEN + 8 + 1000, "last byte": len(GOOD) - 1}[where]
    data[at] ^= 0x04  # "silu" -> "sMlu"; a weight's bit; the last weight's bit
    message = read_bad(tmp_path, bytes(data), "corrupt: the file's CRC-32 is", "copy or download the file again")
    assert header_of()["__metadata__"]["crc32"] in message


def test_a_directory_and_a_missing_file(tmp_path):
    with pytest.raises(WeightsFormatError, match="is a directory"):
        weights_file.read(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        tve.load(tmp_path / "missing.safetensors")


def test_cli_corrupt_and_wrong_version_files_are_one_line(tmp_path):
    """(test_cli.py covers a missing file and a text file; these are a truncated real file and another version.)"""
    (tmp_path / "truncated.safetensors").write_bytes(GOOD[: len(GOOD) // 2])
    header = header_of()
    header["__metadata__"]["format_version"] = "4"
    (tmp_path / "v3.safetensors").write_bytes(with_header(header))
    image = ROOT / "examples" / "digit-3.png"
    for args, words in [
        (["classify", image, "--model", tmp_path / "truncated.safetensors"], ["run past", "truncated"]),
        (["info", tmp_path / "v3.safetensors"], ["format version '4'"]),
    ]:
        r = subprocess.run([TINYVIT, *map(str, args)], check=False, capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"tinyvit {args[0]}: "), r.stderr
        assert all(w in lines[0] for w in words), lines[0]
    r = subprocess.run(
        [TINYVIT, "--debug", "info", tmp_path / "v3.safetensors"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "WeightsFormatError" in r.stderr


# --- checkpoints (malicious and corrupt pytorch_model.bin files: test_torchbin.py) ----------------------------------

STATE = load_file(CHECKPOINT / "model.safetensors")
CONFIG = json.loads((CHECKPOINT / "config.json").read_text())
QKV = "mobilevit.encoder.layer.2.transformer.layer.0.attention.attention."


def checkpoint(path: Path, state: dict | None = None, config: dict | None = None) -> Path:
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(CONFIG if config is None else config))
    save_file(STATE if state is None else state, path / "model.safetensors")
    return path


def convert_bad(tmp_path, error, *words, state=None, config=None) -> str:
    src = checkpoint(tmp_path / "ckpt", state, config)
    with pytest.raises(error) as e:
        tve.convert(src, tmp_path / "out.safetensors")
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not (tmp_path / "out.safetensors").exists()
    return message


@pytest.mark.parametrize(
    "edit, words",
    [
        ({"model_type": "vit"}, ["model_type 'vit' is not supported"]),
        ({"architectures": ["MobileViTForObjectDetection"]}, ["architectures", "MobileViTForObjectDetection"]),
        ({"hidden_sizes": [64, 80, 98]}, ["hidden_sizes", "multiples of num_attention_heads=4"]),  # as transformers
        ({"hidden_act": "gelu_new"}, ["hidden_act = 'gelu_new'"]),  # a transformers activation the engine lacks
        ({"neck_hidden_sizes": [16, 16, 24]}, ["neck_hidden_sizes", "a list of 7 integers"]),
        ({"num_labels": True, "id2label": None}, ["num_labels = True"]),
        ({"problem_type": "ranking"}, ["problem_type = 'ranking'"]),
        ({"layer_norm_eps": float("inf")}, ["layer_norm_eps = inf"]),
    ],
)
def test_unsupported_configs(tmp_path, edit, words):
    convert_bad(tmp_path, UnsupportedConfigError, *words, config={**CONFIG, **edit})


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop("classifier.bias"), ["missing", "classifier.bias"]),
        (
            lambda s: s.pop("mobilevit.conv_stem.normalization.running_var"),
            ["checkpoint tensor conv_stem.normalization.running_var is missing"],
        ),
        (
            lambda s: s.pop(QKV + "key.weight"),
            ["encoder.layer.2.transformer.layer.0.attention.attention.key.weight is missing"],
        ),
        (lambda s: s.update({"extra.weight": np.ones(3, np.float32)}), ["unexpected", "extra.weight"]),
        (
            lambda s: s.update({"classifier.weight": s["classifier.weight"][:, :-1].copy()}),
            ["tensor classifier.weight has shape (319, 10), the config needs (320, 10)"],
        ),
        (
            lambda s: s.update({"mobilevit.conv_stem.normalization.weight": np.ones(3, np.float32)}),
            ["conv_stem.normalization.weight has shape (3,), expected (16,)"],
        ),
        (
            lambda s: s.update({"mobilevit.conv_stem.convolution.weight": np.ones((16, 3, 3), np.float32)}),
            ["conv_stem.convolution.weight has shape (16, 3, 3), expected a 4-D conv weight"],
        ),
        (
            lambda s: s.update({QKV + "value.weight": s[QKV + "value.weight"][:-1].copy()}),
            ["layer.2.transformer.layer.0.attention.attention.value.weight has shape (63, 64), expected (64, 64)"],
        ),
        (lambda s: s.update({"classifier.bias": np.arange(10)}), ["classifier.bias is int64, expected a floating"]),
        (lambda s: s.update({"classifier.bias": np.ones(10, np.complex64)}), ["classifier.bias is complex64"]),
    ],
    ids=[
        "missing",
        "missing-bn",
        "missing-key-proj",
        "unexpected",
        "shape",
        "bn-shape",
        "conv-rank",
        "qkv-shape",
        "int",
        "complex",
    ],
)
def test_bad_checkpoint_tensors_are_named(tmp_path, edit, words):
    state = dict(STATE)
    edit(state)
    convert_bad(tmp_path, WeightsFormatError, *words, state=state)


def test_bfloat16_and_float16_checkpoints_convert(tmp_path):
    """transformers may save half-precision checkpoints: both are widened to float32 (BF16 from its raw bits)."""
    import torch
    from safetensors.torch import save_file as save_torch

    for dtype in (torch.bfloat16, torch.float16):
        src = tmp_path / str(dtype)
        checkpoint(src)
        half = {
            k: torch.from_numpy(v).to(dtype) if v.dtype == np.float32 else torch.from_numpy(v) for k, v in STATE.items()
        }
        save_torch(half, src / "model.safetensors")
        read = read_checkpoint(src)[2]
        for k, v in half.items():
            np.testing.assert_array_equal(read[k], v.float().numpy() if v.is_floating_point() else v.numpy(), k)
        tve.convert(src, tmp_path / f"{dtype}.safetensors")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoint_converts_to_the_same_file(tmp_path, fmt):
    import torch

    src = tmp_path / "sharded"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(CONFIG))
    names = sorted(STATE)
    shards = {f"model-0000{i + 1}-of-00002.{fmt}": names[i::2] for i in range(2)}
    for shard, keys in shards.items():
        if fmt == "safetensors":
            save_file({k: STATE[k] for k in keys}, src / shard)
        else:
            torch.save({k: torch.from_numpy(STATE[k]) for k in keys}, src / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    (src / f"{name}.index.json").write_text(json.dumps(index))
    want, _, _ = weights_file.read(WEIGHTS)
    got, _, _ = weights_file.read(tve.convert(src, tmp_path / "out.safetensors"))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    # a shard name that leaves the directory is refused before anything is opened
    for bad in ("../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors", ".."):
        index["weight_map"][names[0]] = bad
        (src / f"{name}.index.json").write_text(json.dumps(index))
        with pytest.raises(WeightsFormatError, match="is not a file name in the directory"):
            tve.convert(src, tmp_path / "bad.safetensors")
    index["weight_map"] = ["not", "a", "map"]
    (src / f"{name}.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsFormatError, match="no weight_map object"):
        tve.convert(src, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_failed_conversion_leaves_no_file_and_keeps_a_good_one(tmp_path, monkeypatch):
    good = tve.convert(checkpoint(tmp_path / "good"), tmp_path / "out.safetensors")
    before = good.read_bytes()
    state = dict(STATE)
    state.pop("classifier.weight")
    bad = checkpoint(tmp_path / "bad", state)
    with pytest.raises(WeightsFormatError, match="classifier.weight"):
        tve.convert(bad, tmp_path / "new.safetensors")
    with pytest.raises(WeightsFormatError, match="classifier.weight"):
        tve.convert(bad, good)
    assert good.read_bytes() == before and not (tmp_path / "new.safetensors").exists()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    # a write that fails half-way (here: at the rename) leaves neither a temporary file nor a broken output
    with monkeypatch.context() as m:
        m.setattr(os, "replace", disk_full)
        with pytest.raises(OSError, match="No space left"):
            tve.convert(tmp_path / "good", good)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "out.safetensors"]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        tve.convert(tmp_path / "good", tmp_path / "nowhere" / "out.safetensors")
