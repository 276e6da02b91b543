"""Read a PyTorch checkpoint (``pytorch_model.bin``) into numpy arrays, without torch.

Since torch 1.6, ``torch.save`` writes a zip archive: ``<prefix>/data.pkl`` is a pickle of the
state dict in which each tensor is a call to ``torch._utils._rebuild_tensor_v2`` on a
persistent id ``('storage', <storage class>, key, location, numel)``, and ``<prefix>/data/<key>``
holds that storage's raw bytes. Before 1.6 (and with ``_use_new_zipfile_serialization=False``)
it wrote one stream: five pickles (a magic number, the protocol version 1001, a dict of system
facts, the state dict with 6-tuple persistent ids whose last item is a view or None, and the
sorted storage keys), then for each key in that order an int64 element count and the raw
little-endian elements. We do not use ``torch.load``: it needs torch, and unpickling runs
whatever callable the file names. Here the unpickler resolves only an allow-list of globals,
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
_NEITHER = (
    "neither a torch.save zip archive (torch >= 1.6) nor torch's legacy stream (its magic number is missing): it is "
    "truncated or in another format; re-save it with torch.save or use model.safetensors"
)
_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001


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
    """Read a torch checkpoint (zip, or the legacy stream) into C-contiguous native-endian arrays, keyed as saved."""
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
    # the container: anything but a zip is the legacy stream, something else, or truncated
    if not zipfile.is_zipfile(file):
        return _load_legacy(file)
    with zipfile.ZipFile(file) as archive:
        prefix = _prefix(archive)
        refs = _state_dict(_Unpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl"))).load())
        records = {
            key: _ZipRecord(archive, f"{prefix}/data/{key}")
            for key in {r.storage.key for r in refs.values() if isinstance(r.storage, _Storage)}
        }
        storages = _Storages(records, _byteorder(archive, prefix))
        return {name: storages.tensor(name, ref) for name, ref in refs.items()}


def _load_legacy(file: BinaryIO) -> dict[str, np.ndarray]:
    """The pre-1.6 stream: five pickles, then each storage as an int64 count and its little-endian elements."""
    file.seek(0)
    try:
        magic = _Unpickler(file).load()
    except Exception as exc:  # noqa: BLE001 -- whatever the first bytes are, the file is not this format
        raise WeightsFormatError(_NEITHER) from exc
    if magic != _LEGACY_MAGIC:
        raise WeightsFormatError(_NEITHER)
    version = _Unpickler(file).load()
    if version != _LEGACY_PROTOCOL:
        raise WeightsFormatError(f"legacy torch stream of protocol version {version!r:.40}; only 1001 is known")
    facts = _Unpickler(file).load()
    if not isinstance(facts, dict) or facts.get("little_endian") is not True:
        raise WeightsFormatError(f"legacy torch stream written on a big-endian machine or unreadable ({facts!r:.80})")
    refs = _state_dict(_Unpickler(file).load())
    keys = _Unpickler(file).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise WeightsFormatError(
            f"legacy torch stream: the storage keys are not a list of distinct names ({keys!r:.80})"
        )
    # each storage as its pickle declared it; the keys' order is the order of the records after it
    declared = {r.storage.key: r.storage for r in refs.values() if isinstance(r.storage, _Storage)}
    if set(declared) != set(keys):
        odd = sorted(set(declared) ^ set(keys))[0]
        raise WeightsFormatError(f"legacy torch stream: storage {odd!r:.40} is not both declared and recorded")
    size, records = os.fstat(file.fileno()).st_size if hasattr(file, "fileno") else None, {}
    for key in keys:
        (count,) = struct.unpack("<q", file.read(8))
        storage = declared[key]
        itemsize = np.dtype(_STORAGE_DTYPES[storage.type_name]).itemsize
        if count != storage.numel:
            raise WeightsFormatError(
                f"legacy storage {key!r:.40} holds {count} elements; the pickle says {storage.numel}"
            )
        if size is not None and file.tell() + count * itemsize > size:
            raise WeightsFormatError(f"legacy storage {key!r:.40} runs past the end of the file (truncated)")
        data = file.read(count * itemsize)
        if len(data) != count * itemsize:
            raise WeightsFormatError(f"legacy storage {key!r:.40} is cut short (truncated)")
        records[key] = _BytesRecord(data, key)
    storages = _Storages(records, "<")  # torch wrote the elements little-endian on every machine
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
            return _ordered_dict
        raise UnsafeCheckpointError(f"the pickle asks for {module}.{name}, which is not allowed; nothing was executed")

    # Keys are hashed as dicts are built, and hashing a tuple nested 400,000 deep recurses in C until the process
    # dies (a bare hash() of one kills Python 3.11 too): a state dict's keys are names, so only plain values may
    # be keys, checked before anything is hashed; sets, which a state dict never holds, are refused.
    dispatch = dict(pickle._Unpickler.dispatch)

    def _setitem(self) -> None:
        _plain_key(self.stack[-2])
        pickle._Unpickler.load_setitem(self)

    def _setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        for key in items[0::2]:
            _plain_key(key)
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def _dict(self) -> None:
        items = self.pop_mark()
        for key in items[0::2]:
            _plain_key(key)
        self.append({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})

    def _no_sets(self) -> None:
        raise WeightsFormatError("the pickle builds a set, which a state dict never holds")

    dispatch[pickle.SETITEM[0]] = _setitem
    dispatch[pickle.SETITEMS[0]] = _setitems
    dispatch[pickle.DICT[0]] = _dict
    for _op in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET):
        dispatch[_op[0]] = _no_sets

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage class, key, location, numel) names the record data/<key>; the legacy stream adds a
        # view of another storage, or None (views are torch < 0.4's, and not supported)
        match pid:
            case ("storage", str() as kind, str() as key, _, numel) | (
                "storage",
                str() as kind,
                str() as key,
                _,
                numel,
                None,
            ) if kind in _STORAGE_DTYPES and _is_count(numel):
                return _Storage(kind, key, numel)
        raise WeightsFormatError(f"unsupported persistent id {pid!r:.100}")

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
        return _TensorRef(storage, offset, size, stride)

    def _rebuild_parameter(self, data: Any, *_: Any) -> Any:
        return data


class _ZipRecord(NamedTuple):
    """A storage's bytes in a zip archive, read when asked."""

    archive: zipfile.ZipFile
    name: str

    def nbytes(self) -> int:
        return self.archive.getinfo(self.name).file_size

    def read(self) -> bytes:
        return self.archive.read(self.name)


class _BytesRecord(NamedTuple):
    """A storage's bytes already read from the legacy stream."""

    data: bytes
    name: str

    def nbytes(self) -> int:
        return len(self.data)

    def read(self) -> bytes:
        return self.data


def _plain_key(key: Any) -> None:
    if type(key) not in (str, int, float, bool, bytes, type(None)):
        raise WeightsFormatError(f"the pickle keys a dict by a {type(key).__name__}; a state dict's keys are names")


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    """collections.OrderedDict, as a pickle may call it: its items' keys checked before they are hashed."""
    if len(args) > 1 or (args and not isinstance(args[0], (list, tuple))):
        raise WeightsFormatError("the pickle calls OrderedDict with arguments a state dict never has")
    pairs = list(args[0]) if args else []
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise WeightsFormatError("the pickle calls OrderedDict with items that are not (key, value) pairs")
        _plain_key(pair[0])
    return collections.OrderedDict(pairs)


class _Storages:
    """Reads each storage record once, lazily, and cuts bounds-checked tensors out of it."""

    def __init__(self, records: dict[str, _ZipRecord | _BytesRecord], byteorder: str) -> None:
        self._records, self._byteorder = records, byteorder
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
        record = self._records[storage.key]
        stored = np.dtype(_STORAGE_DTYPES[storage.type_name]).newbyteorder(self._byteorder)
        # the record must exist and hold exactly numel elements
        try:
            nbytes, expected = record.nbytes(), storage.numel * stored.itemsize
        except KeyError:
            raise WeightsFormatError(f"storage record {record.name} is missing") from None
        if nbytes != expected:
            raise WeightsFormatError(f"storage record {record.name} holds {nbytes} bytes; the pickle says {expected}")
        # decode to native byte order, and bfloat16 to float32 (its bits are a float32's high half)
        flat = np.frombuffer(record.read(), stored).astype(stored.newbyteorder("="))
        if storage.type_name == "BFloat16Storage":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        return flat
