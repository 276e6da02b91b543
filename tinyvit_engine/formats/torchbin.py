"""Read a PyTorch checkpoint (``pytorch_model.bin``) into numpy arrays, without torch.

Since torch 1.6, ``torch.save`` writes a zip archive: ``<prefix>/data.pkl`` is a pickle of the
state dict in which each tensor is a call to ``torch._utils._rebuild_tensor_v2`` on a
persistent id ``('storage', <storage class>, key, location, numel)``, and ``<prefix>/data/<key>``
holds that storage's raw bytes. We do not use ``torch.load``: it needs torch, and unpickling
runs whatever callable the file names. Here the unpickler resolves only an allow-list of globals,
each to an inert stand-in, and tensors are cut out of the raw bytes afterwards, bounds-checked.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import UnsafeCheckpointError, WeightsFormatError

# fmt: off
# Storage classes torch pickles, and how one element is stored (bfloat16 as its raw uint16 bits).
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# What malformed input makes zipfile, pickle or numpy raise; wrapped into WeightsFormatError.
_CORRUPT = (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, LookupError,
            AttributeError, TypeError, ValueError, ArithmeticError, RuntimeError, MemoryError)
# fmt: on
_NOT_A_ZIP = (
    "not a zip archive, so not a checkpoint written by torch.save in torch >= 1.6: it is truncated, or in the "
    "legacy pre-1.6 torch format or another format, which are not supported; re-save it with torch.save "
    "(torch >= 1.6) or use model.safetensors"
)


class _Storage(NamedTuple):
    """A persistent id: the storage record ``data/<key>`` holding ``numel`` elements."""

    type_name: str
    key: str
    numel: int


class _TensorRef(NamedTuple):
    """What ``_rebuild_tensor_v2`` was asked to build: a strided view of a storage."""

    storage: Any
    offset: Any
    size: Any
    stride: Any


def load_torch_bin(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a torch >= 1.6 checkpoint into C-contiguous native-endian arrays, keyed as saved."""
    where = os.fspath(path)
    with open(where, "rb") as file:
        try:
            return _load(file)
        except WeightsFormatError as exc:
            raise _at(where, str(exc), type(exc)) from exc.__cause__
        except _CORRUPT as exc:
            raise _at(where, f"corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from exc


def _at(where: str, message: str, kind: type[WeightsFormatError] = WeightsFormatError) -> WeightsFormatError:
    """The error to raise: one line that starts with the file path."""
    return kind(" ".join(f"{where}: {message}".splitlines()))


def _load(file: BinaryIO) -> dict[str, np.ndarray]:
    """Unpickle the state dict with the allow-list, then build each tensor from its storage."""
    # the container: anything but a zip is the legacy format, something else, or truncated
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise WeightsFormatError(_NOT_A_ZIP) from exc
    with archive:
        prefix = _prefix(archive)
        refs = _state_dict(_Unpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl"))).load())
        storages = _Storages(archive, prefix, _byteorder(archive, prefix))
        return {name: storages.tensor(name, ref) for name, ref in refs.items()}


def _prefix(archive: zipfile.ZipFile) -> str:
    """The archive's top-level folder, the one holding data.pkl."""
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise WeightsFormatError(f"a torch checkpoint zip holds exactly one <prefix>/data.pkl; found {len(pickles)}")
    return pickles[0].split("/")[0]


def _byteorder(archive: zipfile.ZipFile, prefix: str) -> str:
    """The numpy byte-order character of the storage records."""
    # torch < 1.10 wrote no byteorder record, and only little-endian data
    record = f"{prefix}/byteorder"
    order = archive.read(record) if record in archive.namelist() else b"little"
    if order not in (b"little", b"big"):
        raise WeightsFormatError(f"{record} says {order[:20]!r}, expected b'little' or b'big'")
    return "<" if order == b"little" else ">"


def _state_dict(obj: Any) -> dict[str, _TensorRef]:
    """Check that the pickle is a flat dict of tensors, unwrapping {"state_dict": {...}}."""
    # a training checkpoint may wrap the state dict under one well-known key
    if isinstance(obj, dict) and len(obj) == 1:
        ((key, inner),) = obj.items()
        if key in ("state_dict", "model") and isinstance(inner, dict):
            obj = inner
    if not isinstance(obj, dict):
        raise WeightsFormatError(f"expected a dict of tensors at the top of the pickle, found {_type_name(obj)}")
    # every entry must be a tensor under a string name
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _TensorRef):
            found = f"{key!r:.60} -> {_type_name(value)}"
            raise WeightsFormatError(f"only a state dict of string names to tensors is supported; found {found}")
    return obj


def _type_name(value: Any) -> str:
    return "tensor" if isinstance(value, _TensorRef) else type(value).__name__


def _is_count(value: Any) -> bool:
    """A non-negative int (pickle gives exact ints; bools are refused)."""
    return type(value) is int and value >= 0


def _well_formed(ref: _TensorRef) -> bool:
    """A storage, a count offset, and size and stride tuples of counts, of one length."""
    size, stride = ref.size, ref.stride
    shaped = isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
    return isinstance(ref.storage, _Storage) and shaped and all(map(_is_count, (ref.offset, *size, *stride)))


class _Unpickler(pickle._Unpickler):
    """Unpickles data.pkl, resolving only allow-listed globals, each to an inert stand-in.

    It is the pure-Python unpickler: the C one sizes its memo list by the largest index a PUT
    opcode names, so a corrupt or hostile 12-byte pickle can make it allocate gigabytes.
    """

    def find_class(self, module: str, name: str) -> Any:
        # storage classes become their names; tensor and parameter rebuilds only record their args
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            raise WeightsFormatError(f"storage type {module}.{name} is not supported")
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return self._rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise UnsafeCheckpointError(f"the pickle asks for {module}.{name}, which is not allowed; nothing was executed")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage class, key, location, numel) names the record data/<key>
        match pid:
            case ("storage", str() as kind, str() as key, _, numel) if kind in _STORAGE_DTYPES and _is_count(numel):
                return _Storage(kind, key, numel)
        raise WeightsFormatError(f"unsupported persistent id {pid!r:.100}")

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
        return _TensorRef(storage, offset, size, stride)

    def _rebuild_parameter(self, data: Any, *_: Any) -> Any:
        return data


class _Storages:
    """Reads each storage record once, lazily, and cuts bounds-checked tensors out of it."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._cache: dict[_Storage, np.ndarray] = {}

    def tensor(self, name: str, ref: _TensorRef) -> np.ndarray:
        """A C-contiguous copy of the view ``ref`` describes."""
        # the geometry must be well-typed and non-negative
        if not _well_formed(ref):
            geometry = f"{ref.offset!r:.40}, {ref.size!r:.80}, {ref.stride!r:.80}"
            raise WeightsFormatError(f"tensor {name!r}: malformed or negative offset, size or stride ({geometry})")
        offset, size, stride, flat = ref.offset, ref.size, ref.stride, self._flat(ref.storage)
        if 0 in size:
            return np.zeros(size, flat.dtype)
        # the last element the view reaches must lie inside the storage
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= flat.size:
            what = f"tensor {name!r} (offset {offset}, shape {size}, stride {stride})"
            raise WeightsFormatError(f"{what} reaches element {last}, but its storage holds {flat.size}")
        view = as_strided(flat[offset:], size, tuple(s * flat.itemsize for s in stride), writeable=False)
        return view.copy(order="C")

    def _flat(self, storage: _Storage) -> np.ndarray:
        # tensors that share a storage (slices, views) read its record only once
        if storage not in self._cache:
            self._cache[storage] = self._read(storage)
        return self._cache[storage]

    def _read(self, storage: _Storage) -> np.ndarray:
        record = f"{self._prefix}/data/{storage.key}"
        stored = np.dtype(_STORAGE_DTYPES[storage.type_name]).newbyteorder(self._byteorder)
        # the record must exist and hold exactly numel elements
        try:
            nbytes, expected = self._archive.getinfo(record).file_size, storage.numel * stored.itemsize
        except KeyError:
            raise WeightsFormatError(f"storage record {record} is missing") from None
        if nbytes != expected:
            raise WeightsFormatError(f"storage record {record} holds {nbytes} bytes; the pickle says {expected}")
        # decode to native byte order, and bfloat16 to float32 (its bits are a float32's high half)
        flat = np.frombuffer(self._archive.read(record), stored).astype(stored.newbyteorder("="))
        if storage.type_name == "BFloat16Storage":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        return flat
