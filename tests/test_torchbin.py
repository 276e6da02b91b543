"""load_torch_bin against torch.save/torch.load, on hostile pickles, and on corrupt or truncated files."""

import io
import pickle
import subprocess
import sys
import tracemalloc
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyvit_engine.errors import UnsafeCheckpointError, WeightsFormatError
from tinyvit_engine.formats.torchbin import load_torch_bin

PREFIX = "archive"


# ---------------------------------------------------------------- helpers


def save(tmp_path, obj, name="pytorch_model.bin"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def members(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def data_pkl(files):
    return next(name for name in files if name.endswith("/data.pkl"))


def write_zip(path, records):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return path


def expected(t):
    """What load_torch_bin should return for a torch tensor: bfloat16 widens to float32."""
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


def assert_matches(loaded, tensors):
    assert list(loaded) == list(tensors)
    for name, t in tensors.items():
        got, want = loaded[name], expected(t)
        assert got.dtype == want.dtype and got.dtype.isnative, name
        assert got.shape == want.shape, name
        assert got.flags.c_contiguous and got.flags.writeable and got.flags.owndata, name
        np.testing.assert_array_equal(got, want)


def expect_error(path, kind=WeightsFormatError, match=None):
    """The load fails with `kind` (not any other exception); the message is one line led by the path."""
    with pytest.raises(kind, match=match) as info:
        load_torch_bin(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


class Storage:
    """A storage for a crafted pickle; `pid` is the persistent id written for it."""

    def __init__(self, pid):
        self.pid = pid


def storage(numel, key="0", cls=torch.FloatStorage):
    return Storage(("storage", cls, key, "cpu", numel))


class Tensor:
    """Pickles as torch does a tensor, but with any offset, size and stride we like."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class CraftPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def craft(path, state, records, byteorder=b"little"):
    """A torch-layout zip around a pickle of `state`, with `records` as data/<key>."""
    buffer = io.BytesIO()
    CraftPickler(buffer, protocol=2).dump(state)
    files = {f"{PREFIX}/data.pkl": buffer.getvalue(), f"{PREFIX}/byteorder": byteorder, f"{PREFIX}/version": b"3\n"}
    files.update({f"{PREFIX}/data/{key}": data for key, data in records.items()})
    return write_zip(path, files)


def payload(module, name, *args):
    """A protocol-2 pickle that calls module.name(*args), as plain pickle.load would."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.dumps(args, 2)[2:-1] + b"R."


# ---------------------------------------------------------------- files torch.save writes


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    ],
)
def test_dtypes(tmp_path, dtype):
    values = torch.arange(-6, 18, dtype=torch.float32).reshape(2, 3, 4) / 3
    if dtype == torch.bool:
        t = values > 1
    elif dtype.is_floating_point:
        t = values.to(dtype)
    else:
        t = (values * 3).to(dtype)
    state = {"t": t, "scalar": t[1, 2, 3].clone()}
    assert_matches(load_torch_bin(save(tmp_path, state)), state)


def test_bfloat16_bits_decode_exactly(tmp_path):
    t = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0e38, 1.0e-38, float("inf"), float("-inf")], dtype=torch.bfloat16)
    got = load_torch_bin(save(tmp_path, {"t": t}))["t"]
    assert got.dtype == np.float32
    assert got.tobytes() == t.float().numpy().tobytes()  # bit for bit, signs of zero included


def test_zero_dim_and_empty(tmp_path):
    state = {"num_batches_tracked": torch.tensor(7), "x": torch.tensor(2.5), "empty": torch.zeros(0, 3)}
    loaded = load_torch_bin(save(tmp_path, state))
    assert loaded["num_batches_tracked"].shape == () and loaded["num_batches_tracked"] == 7
    assert_matches(loaded, state)


def test_non_contiguous_views(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    state = {"t": base[0].t(), "permuted": base.permute(2, 0, 1), "stepped": base[:, ::2, 1::3]}
    assert not any(t.is_contiguous() for t in state.values())
    assert_matches(load_torch_bin(save(tmp_path, state)), state)


def test_shared_storage_with_offsets_is_read_once(tmp_path, monkeypatch):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"row": base[1], "block": base[2:, 1:4], "whole": base, "col": base[:, 5]}
    path = save(tmp_path, state)
    assert len([n for n in members(path) if "/data/" in n]) == 1  # torch wrote one storage
    reads = []
    original = zipfile.ZipFile.read
    monkeypatch.setattr(
        zipfile.ZipFile, "read", lambda self, name, pwd=None: reads.append(name) or original(self, name, pwd)
    )
    loaded = load_torch_bin(path)
    assert_matches(loaded, state)
    assert len([n for n in reads if "/data/" in n]) == 1
    loaded["row"][0] = -1  # copies: writing one does not touch another
    assert loaded["whole"][1, 0] == 6


def test_parameters(tmp_path):
    plain = torch.nn.Parameter(torch.randn(3, 2))
    with_state = torch.nn.Parameter(torch.randn(4))
    with_state.tag = "kept by _rebuild_parameter_with_state"
    loaded = load_torch_bin(save(tmp_path, {"plain": plain, "with_state": with_state}))
    assert_matches(loaded, {"plain": plain, "with_state": with_state})


def small_module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )
    model(torch.randn(2, 3, 6, 6))  # training mode: moves the running stats and num_batches_tracked
    return model


def test_module_state_dict(tmp_path):
    state = small_module().state_dict()
    path = save(tmp_path, state)
    assert_matches(load_torch_bin(path), torch.load(path, weights_only=True))
    assert load_torch_bin(str(path)).keys() == state.keys()  # str paths too


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_state_dict_is_unwrapped(tmp_path, key):
    state = small_module().state_dict()
    assert_matches(load_torch_bin(save(tmp_path, {key: state})), state)


def test_big_endian_file_is_byteswapped(tmp_path):
    floats, halves = (np.arange(6) / 4).astype(">f4"), (np.arange(3) - 1).astype(">f2")
    bf16 = (np.array([1.5, -3.0], dtype=">f4").view(">u4") >> 16).astype(">u2")
    state = {
        "f": Tensor(storage(6), 0, (2, 3), (3, 1)),
        "h": Tensor(storage(3, "1", torch.HalfStorage), 1, (2,), (1,)),
        "b": Tensor(storage(2, "2", torch.BFloat16Storage), 0, (2,), (1,)),
    }
    records = {"0": floats.tobytes(), "1": halves.tobytes(), "2": bf16.tobytes()}
    path = craft(tmp_path / "big.bin", state, records, byteorder=b"big")
    loaded = load_torch_bin(path)
    assert_matches(loaded, torch.load(path, weights_only=True))  # torch reads our crafted file the same way
    np.testing.assert_array_equal(loaded["f"], floats.reshape(2, 3))
    np.testing.assert_array_equal(loaded["h"], halves[1:])
    np.testing.assert_array_equal(loaded["b"], np.array([1.5, -3.0], np.float32))


@pytest.mark.slow
def test_transformers_mobilevit_checkpoint(tmp_path):
    import transformers  # a test dependency: missing, the test must fail, not skip

    torch.manual_seed(0)
    config = transformers.MobileViTConfig(
        hidden_sizes=[32, 48, 64], neck_hidden_sizes=[16, 16, 24, 32, 40, 48, 96], num_labels=5
    )
    model = transformers.MobileViTForImageClassification(config)
    model.save_pretrained(tmp_path, safe_serialization=False)
    path = tmp_path / "pytorch_model.bin"
    if not path.exists():  # transformers >= 5 only writes safetensors; 4.x wrote exactly this
        torch.save(model.state_dict(), path)
    reference = torch.load(path, weights_only=True)
    loaded = load_torch_bin(path)
    assert len(loaded) > 300 and any(a.shape == () for a in loaded.values())
    assert_matches(loaded, reference)


def test_module_does_not_import_torch(tmp_path):
    path = save(tmp_path, {"w": torch.ones(2)})
    code = (
        "import sys; from tinyvit_engine.formats.torchbin import load_torch_bin; "
        f"assert load_torch_bin({str(path)!r})['w'].sum() == 2; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- hostile pickles


MARKER_CALLS = {
    "os.system": lambda m: ("os", "system", f"touch '{m}'"),
    "posix.system": lambda m: ("posix", "system", f"touch '{m}'"),
    "builtins.open": lambda m: ("builtins", "open", str(m), "w"),
    "subprocess.call": lambda m: ("subprocess", "call", ["touch", str(m)]),
    "builtins.eval": lambda m: ("builtins", "eval", f"open({str(m)!r}, 'w').close()"),
    "builtins.exec": lambda m: ("builtins", "exec", f"open({str(m)!r}, 'w').close()"),
}


@pytest.mark.parametrize("name", MARKER_CALLS)
def test_hostile_global_is_refused_before_running(tmp_path, name):
    marker = tmp_path / "pwned"
    path = save(tmp_path, {"w": torch.ones(2)})
    files = members(path)
    pickle_name = data_pkl(files)
    files[pickle_name] = payload(*MARKER_CALLS[name](marker))
    write_zip(path, files)
    message = expect_error(path, UnsafeCheckpointError)
    assert message == f"{path}: the pickle asks for {name}, which is not allowed; nothing was executed"
    assert not marker.exists()
    result = pickle.loads(
        files[pickle_name]
    )  # the payload is live: plain pickle (torch.load, not weights_only) runs it
    getattr(result, "close", lambda: None)()
    assert marker.exists()


class Evil:
    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return eval, (self.code,)


def test_reduce_with_eval_inside_a_state_dict(tmp_path):
    marker = tmp_path / "pwned"
    state = {"w": Tensor(storage(2), 0, (2,), (1,)), "evil": Evil(marker)}
    path = craft(tmp_path / "evil.bin", state, {"0": np.ones(2, np.float32).tobytes()})
    expect_error(path, UnsafeCheckpointError, match=r"__builtin__\.eval")  # protocol 2 spells builtins so
    assert not marker.exists()


def test_hostile_storage_class_is_refused(tmp_path):
    state = {"w": Tensor(Storage(("storage", subprocess.Popen, "0", "cpu", 2)), 0, (2,), (1,))}
    path = craft(tmp_path / "evil.bin", state, {"0": b"\0" * 8})
    expect_error(path, UnsafeCheckpointError, match=r"commands\.Popen")  # protocol 2 spells subprocess so


# ---------------------------------------------------------------- malformed files


@pytest.fixture
def good(tmp_path):
    """A valid checkpoint: one storage shared by two views, and a second storage."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return save(tmp_path, {"a": base.t(), "b": base[1, 1:], "n": torch.tensor(3)}, "good.bin")


@pytest.mark.parametrize("data", [b"", np.random.default_rng(0).bytes(4096), pickle.dumps({"w": 1}, 2)])
def test_not_a_zip(tmp_path, data):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(data)
    message = expect_error(path)
    assert "legacy" in message and "torch.save" in message and "safetensors" in message


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file(tmp_path, good, fraction):
    data = good.read_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_error(path)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 0.95])
def test_truncated_pickle(tmp_path, good, fraction):
    files = members(good)
    name = data_pkl(files)
    files[name] = files[name][: int(len(files[name]) * fraction)]
    expect_error(write_zip(tmp_path / "cut.bin", files))


def test_flipped_byte_in_a_storage_record_fails_the_crc(tmp_path, good):
    data = bytearray(good.read_bytes())
    at = data.find(np.arange(4, 8, dtype=np.float32).tobytes())
    data[at + 1] ^= 0xFF
    path = tmp_path / "flipped.bin"
    path.write_bytes(bytes(data))
    expect_error(path, match="CRC")


def test_zip_that_is_not_a_checkpoint(tmp_path):
    expect_error(write_zip(tmp_path / "x.bin", {"hello.txt": b"hi"}), match="exactly one")
    two = {"a/data.pkl": pickle.dumps({}), "b/data.pkl": pickle.dumps({})}
    expect_error(write_zip(tmp_path / "y.bin", two), match="found 2")


def edit_records(good, edit):
    files = members(good)
    edit(files, next(n.rsplit("/", 1)[0] for n in files if n.endswith("/data.pkl")))
    return files


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f, p: f.pop(f"{p}/data/0"), "data/0 is missing"),
        (lambda f, p: f.update({f"{p}/data/0": f[f"{p}/data/0"][:-4]}), "holds 44 bytes"),
        (lambda f, p: f.update({f"{p}/data/0": f[f"{p}/data/0"] + b"\0" * 4}), "holds 52 bytes"),
        (lambda f, p: f.update({f"{p}/byteorder": b"middle"}), "byteorder"),
    ],
)
def test_bad_records(tmp_path, good, edit, match):
    expect_error(write_zip(tmp_path / "bad.bin", edit_records(good, edit)), match=match)


@pytest.mark.parametrize(
    "offset, size, stride, match",
    [
        (0, (2, 4), (4, 1), "reaches element 7, but its storage holds 6"),
        (5, (2,), (1,), "reaches element 6"),
        (6, (), (), "reaches element 6"),
        (0, (3, 2), (2, 3), "reaches element 7"),
        (0, (2,), (-1,), "negative"),
        (0, (-2,), (1,), "negative"),
        (-1, (2,), (1,), "negative"),
        (0, (2, 3), (3,), "malformed"),
        (0.0, (2,), (1,), "malformed"),
        (0, (True,), (1,), "malformed"),
        (0, [2], [1], "malformed"),
    ],
)
def test_bad_geometry(tmp_path, offset, size, stride, match):
    state = {"w": Tensor(storage(6), offset, size, stride)}
    path = craft(tmp_path / "bad.bin", state, {"0": np.zeros(6, np.float32).tobytes()})
    expect_error(path, match=match)


@pytest.mark.parametrize(
    "pid, match",
    [
        (("storage", torch.ComplexFloatStorage, "0", "cpu", 3), "torch.ComplexFloatStorage is not supported"),
        (("storage", "ComplexFloatStorage", "0", "cpu", 3), "persistent id"),
        (("storage", torch.FloatStorage, "0", "cpu"), "persistent id"),
        (("storage", torch.FloatStorage, "0", "cpu", -6), "persistent id"),
        (("module", torch.FloatStorage, "0", "cpu", 6), "persistent id"),
    ],
)
def test_bad_persistent_ids(tmp_path, pid, match):
    state = {"w": Tensor(Storage(pid), 0, (2,), (1,))}
    expect_error(craft(tmp_path / "bad.bin", state, {"0": b"\0" * 24}), match=match)


def test_bare_storage_is_not_a_tensor(tmp_path):
    path = save(tmp_path, {"s": torch.ones(3).untyped_storage()})
    expect_error(path, match="torch.storage.UntypedStorage is not supported")


@pytest.mark.parametrize(
    "obj, match",
    [
        ([torch.ones(2)], "top of the pickle, found list"),
        (torch.ones(2), "top of the pickle, found tensor"),
        ({"w": torch.ones(2), "epoch": 3}, "found 'epoch' -> int"),
        ({"state_dict": {"w": torch.ones(2)}, "optimizer": {}}, "found 'state_dict' -> dict"),
        ({"state_dict": {"w": {"nested": torch.ones(2)}}}, "found 'w' -> dict"),
        ({1: torch.ones(2)}, "found 1 -> tensor"),
    ],
)
def test_not_a_state_dict(tmp_path, obj, match):
    expect_error(save(tmp_path, obj), match=match)


def test_huge_memo_index_allocates_nothing(tmp_path, good):
    files = members(good)
    name = data_pkl(files)
    files[name] = b"\x80\x02K\x01r\x00\x00\x00\x01."  # 1, then LONG_BINPUT 2**24: a 256 MiB memo in C pickle
    path = write_zip(tmp_path / "memo.bin", files)
    tracemalloc.start()
    try:
        expect_error(path, match="top of the pickle, found int")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mangled_pickle_never_escapes_as_another_error(tmp_path, good, data):
    files = members(good)
    name = data_pkl(files)
    mangled = bytearray(files[name])
    for _ in range(data.draw(st.integers(1, 4))):
        mangled[data.draw(st.integers(0, len(mangled) - 1))] = data.draw(st.integers(0, 255))
    files[name] = bytes(mangled[: data.draw(st.integers(1, len(mangled)))])
    path = write_zip(tmp_path / "mangled.bin", files)
    try:
        loaded = load_torch_bin(path)
    except WeightsFormatError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
    else:
        assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in loaded.values())


# ---------------------------------------------------------------- the legacy (pre-1.6) stream


def save_legacy(tmp_path, obj, protocol=2, name="legacy.bin"):
    path = tmp_path / name
    torch.save(obj, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_legacy_stream_reads_as_torch_does(tmp_path, protocol):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = OrderedDict(
        a=base.t(), b=base[1, 1:], n=torch.tensor(3), h=torch.ones(3, dtype=torch.float16),
        bf=torch.tensor([1.5, -2.0], dtype=torch.bfloat16), i=torch.arange(5), e=torch.zeros(0, 4),
    )  # fmt: skip
    path = save_legacy(tmp_path, tensors, protocol)
    assert not zipfile.is_zipfile(path)
    assert_matches(load_torch_bin(path), tensors)
    assert_matches(load_torch_bin(path), torch.load(path, weights_only=False))  # our own file: trusted


def test_legacy_transformers_checkpoint_loads_and_runs(tmp_path):
    """A MobileViT checkpoint as torch < 1.6 wrote it: from_pretrained runs it as transformers does."""
    import shutil

    from hf import pixels, reference_outputs, save_checkpoint, v1_model

    import tinyvit_engine as tve

    model = v1_model("xx-small", seed=5, num_labels=4)
    src = save_checkpoint(model, tmp_path / "zip")
    legacy = shutil.copytree(src, tmp_path / "legacy", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    save_legacy(legacy, model.state_dict(), name="pytorch_model.bin")
    x = pixels(2, 64, 64, seed=1)
    got = tve.MobileViTForImageClassification.from_pretrained(legacy)(x).logits
    want = reference_outputs(model, x)["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.fixture
def legacy(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return save_legacy(tmp_path, {"a": base.t(), "b": base[1, 1:], "n": torch.tensor(3)})


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.8, 0.95, 0.999])
def test_truncated_legacy_stream(tmp_path, legacy, fraction):
    data = legacy.read_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_error(path)


def test_legacy_hostile_global_is_refused(tmp_path, legacy):
    """The state-dict pickle replaced by one that calls os.system: refused, nothing run."""
    marker = tmp_path / "pwned"
    head = b"".join(pickle.dumps(x, 2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    path = tmp_path / "evil.bin"
    path.write_bytes(head + payload("os", "system", f"touch '{marker}'") + pickle.dumps([], 2))
    expect_error(path, UnsafeCheckpointError, match=r"os\.system|posix\.system")
    assert not marker.exists()


@pytest.mark.parametrize(
    "facts, match",
    [({"little_endian": False}, "big-endian"), ([], "big-endian"), ],
)  # fmt: skip
def test_legacy_stream_from_a_big_endian_machine_is_refused(tmp_path, facts, match):
    head = b"".join(pickle.dumps(x, 2) for x in (0x1950A86A20F9469CFC6C, 1001, facts))
    path = tmp_path / "be.bin"
    path.write_bytes(head + pickle.dumps({}, 2) + pickle.dumps([], 2))
    expect_error(path, match=match)
