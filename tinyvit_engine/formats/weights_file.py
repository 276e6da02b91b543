"""The engine's weights file: one safetensors file holding float32, C-contiguous tensors in engine layout, and in its
metadata a format name, a format version, the transformers config and the preprocessor config (both as JSON).

Engine layout: conv weights (kh, kw, cin / groups, cout) with BatchNorm folded in, linear weights (in, out), fused
query/key/value projections. The last axis of every conv and linear weight is its output channel.

Integrity (version 3): the metadata's "crc32" is the CRC-32 of the header without it (as canonical JSON) followed by
the tensor data, checked at every load, so that a flipped bit anywhere (a worn SD card, a cut download) is an error
that says so, never a silently different answer. Version 1 and 2 files, which carry none, still load.

Storage (version 2 and later; version 1 files, all float32, still load): the metadata's "storage" says how the conv
and linear weights (the tensors of rank 2 and more) are stored; biases and norm parameters are always float32.
- float32: as they are.
- float16: IEEE half precision (a weight beyond float16's range is refused at conversion, not made infinite).
- int8: symmetric, one scale per output channel: w[..., c] = q[..., c] * scale[c], q in [-127, 127], scale =
  max |w[..., c]| / 127 (1 for a channel of zeros), stored as the float32 tensor "<name>::scale".
Reading widens every weight to float32 once; the kernels always compute in float32.

The reader parses the safetensors header itself (`parse`): every length, shape and offset is checked against the
size of the file before a tensor is read, so a truncated, corrupt or hostile file fails at once with a
WeightsFormatError naming the problem, instead of allocating what its header claims. The converter reads checkpoint
safetensors files through the same parser.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from ..errors import WeightsFormatError

FORMAT = "tinyvit-engine"
VERSION = 3
VERSIONS = ("1", "2", "3")  # the versions this reader reads
STORAGE = ("float32", "float16", "int8")
SCALE = "::scale"  # the suffix of an int8 weight's per-channel scales
# safetensors dtype names -> how one element is stored (little-endian; BF16 as its raw bits, widened on reading)
NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
    "C64": "<c8",
}
ITEMSIZE = {**{k: np.dtype(v).itemsize for k, v in NUMPY.items()}, "F8_E4M3": 1, "F8_E5M2": 1}

Entry = tuple[str, tuple[int, ...], int]  # a tensor of a parsed file: dtype name, shape, byte offset in the file


def write(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    config: dict,
    preprocessor: dict | None,
    storage: str = "float32",
) -> None:
    """Write atomically: a temporary file beside `path`, renamed over it only once complete."""
    path = Path(path)
    if storage not in STORAGE:
        raise ValueError(f"storage dtype {storage!r}: expected one of {', '.join(STORAGE)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory to write {path.name} into")
    metadata = {
        "format": FORMAT,
        "format_version": str(VERSION),
        "storage": storage,
        "config": json.dumps(config),
        "preprocessor_config": json.dumps(preprocessor) if preprocessor is not None else "",
    }
    data = stamped(encode(tensors, storage), metadata)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def encode(tensors: dict[str, np.ndarray], storage: str) -> dict[str, np.ndarray]:
    """The tensors as stored: weights (rank >= 2) in `storage`, everything else float32."""
    out = {}
    for name, t in sorted(tensors.items()):
        t = np.ascontiguousarray(t, np.float32)
        if t.ndim < 2 or storage == "float32":
            out[name] = t
        elif storage == "float16":
            if np.abs(t).max() > np.finfo(np.float16).max:
                raise WeightsFormatError(f"tensor {name}: values up to {np.abs(t).max():.3g} do not fit in float16")
            out[name] = t.astype(np.float16)
        else:
            top = np.abs(t).reshape(-1, t.shape[-1]).max(axis=0)
            scale = np.where(top > 0, top / 127, 1).astype(np.float32)
            out[name] = np.clip(np.rint(t / scale), -127, 127).astype(np.int8)
            out[name + SCALE] = scale
    return out


def decode(stored: dict[str, np.ndarray], storage: str, where: str) -> dict[str, np.ndarray]:
    """The float32 tensors of a file stored as `storage`, every stored dtype and scale checked first."""

    def bad(why: str) -> WeightsFormatError:
        return WeightsFormatError(f"{where}: {why}")

    out = {}
    for name, t in stored.items():
        if name.endswith(SCALE):
            if storage != "int8":
                raise bad(f"tensor {name}: a {storage} weights file has no scales")
            if name.removesuffix(SCALE) not in stored:
                raise bad(f"tensor {name} scales a weight that is not in the file")
            continue
        quantized = storage == "int8" and t.ndim >= 2
        want = {"int8": np.int8, "float16": np.float16}.get(storage, np.float32) if t.ndim >= 2 else np.float32
        if t.dtype != want:
            what = f"a {storage} file's weights" if t.ndim >= 2 else "biases and norm parameters"
            raise bad(f"tensor {name} is {t.dtype}, but {what} are {np.dtype(want).name}")
        if not quantized:
            out[name] = t.astype(np.float32)
            continue
        scale = stored.get(name + SCALE)
        if scale is None:
            raise bad(f"int8 tensor {name} has no {name + SCALE} tensor")
        if scale.dtype != np.float32 or scale.shape != (t.shape[-1],):
            raise bad(
                f"tensor {name + SCALE} is {scale.dtype} {scale.shape}, expected float32 ({t.shape[-1]},): "
                "one scale per output channel"
            )
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise bad(f"tensor {name + SCALE} holds scales that are not finite and positive")
        out[name] = t.astype(np.float32) * scale
    return out


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any] | None]:
    """(tensors, config, preprocessor config) of an engine weights file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise WeightsFormatError(
            f"{path}: is a directory; pass a checkpoint directory to tve.load or convert"
        ) from None
    metadata, entries = parse(data, str(path))
    storage, config, pre = _engine_metadata(metadata, str(path))
    allowed = {"float32": {"F32"}, "float16": {"F32", "F16"}, "int8": {"F32", "I8"}}[storage]
    for name, (dtype, _, _) in entries.items():
        if dtype not in allowed:
            raise WeightsFormatError(
                f"{path}: tensor {name} is {dtype}, but a {storage} weights file holds only "
                f"{', '.join(sorted(allowed))}"
            )
    return decode(tensors(data, entries, str(path)), storage, str(path)), config, pre


def read_configs(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(config, preprocessor config) of an engine weights file, from its header alone (no tensor is read)."""
    return read_header(path)[1:]


def read_header(path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(storage dtype, config, preprocessor config) of an engine weights file, from its header alone."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if n > path.stat().st_size - 8:
                raise WeightsFormatError(f"{path}: not a valid safetensors file (truncated header)")
            header = head + f.read(n)
    except IsADirectoryError:
        raise WeightsFormatError(f"{path}: is a directory, not an engine weights file") from None
    metadata, _ = parse(header, str(path), header_only=True)
    return _engine_metadata(metadata, str(path))


def _engine_metadata(metadata: dict[str, str], where: str) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(storage, config, preprocessor config) of an engine file's metadata, its format and version checked."""
    if metadata.get("format") != FORMAT:
        raise WeightsFormatError(
            f"{where}: a safetensors file, but not a {FORMAT} weights file; convert the "
            "checkpoint with tve.convert (or `tinyvit convert`) first"
        )
    if metadata.get("format_version") not in VERSIONS:
        raise WeightsFormatError(
            f"{where}: {FORMAT} format version {metadata.get('format_version')!r}, this engine "
            f"reads versions {', '.join(VERSIONS)}; convert the checkpoint again with this version"
        )
    storage = storage_of(metadata, where)
    try:
        config = json.loads(metadata["config"])
        pre = json.loads(metadata["preprocessor_config"]) if metadata.get("preprocessor_config") else None
    except (KeyError, ValueError, RecursionError) as e:
        raise WeightsFormatError(f"{where}: the stored config is not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(pre, (dict, type(None))):
        raise WeightsFormatError(f"{where}: the stored config or preprocessor config is not a JSON object")
    return storage, config, pre


def storage_of(metadata: dict[str, str], where: str) -> str:
    """The storage dtype a file's metadata names (version 1 files: float32)."""
    storage = metadata.get("storage", "float32") if metadata.get("format_version") != "1" else "float32"
    if storage not in STORAGE:
        raise WeightsFormatError(f"{where}: storage dtype {storage!r:.40} is none of {', '.join(STORAGE)}")
    return storage


def parse(data: bytes, where: str, header_only: bool = False) -> tuple[dict[str, str], dict[str, Entry]]:
    """The metadata and the tensor entries of a safetensors blob, every size and offset checked against the blob
    (header_only: `data` is the header alone, and only the metadata is read)."""

    def bad(why: str) -> WeightsFormatError:
        return WeightsFormatError(f"{where}: not a valid safetensors file ({why})")

    # 8 bytes of header length, then that much JSON, then the tensor data
    if len(data) < 8:
        raise bad(f"{len(data)} bytes, too short to hold a header" if data else "the file is empty")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise bad(f"the header length says {n} bytes, but only {len(data) - 8} follow: truncated or not safetensors")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad(f"the header is not JSON: {str(e)[:100]}") from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.get("__metadata__")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ is not an object of strings")
    if header_only:
        return metadata, {}
    header.pop("__metadata__", None)
    # every tensor's byte range must lie in the data and match its dtype and shape
    size, entries, spans = len(data) - 8 - n, {}, []
    for name, info in header.items():
        info = info if isinstance(info, dict) else {}
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise bad(f"tensor {name}: dtype {dtype!r:.40} is not a safetensors dtype this reader knows")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"tensor {name}: shape {shape!r:.80} is not a list of sizes")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise bad(f"tensor {name}: data_offsets {offsets!r:.80} are not [begin, end]")
        begin, end = offsets
        if end > size:
            raise bad(f"tensor {name}: data_offsets [{begin}, {end}] run past the {size} bytes of data: truncated?")
        if end - begin != _nbytes(shape, ITEMSIZE[dtype], size):
            raise bad(f"tensor {name}: {end - begin} bytes hold no {dtype} tensor of shape {tuple(shape)!s:.100}")
        entries[name] = (dtype, tuple(shape), 8 + n + begin)
        spans.append((begin, end, name))
    # and the tensors must tile the data exactly: no gaps, no overlaps, nothing after
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise bad(f"tensor {name} starts at byte {begin} of the data, expected {position} (a gap or an overlap)")
        position = end
    if position != size:
        raise bad(f"the tensors take {position} bytes, but {size} bytes of data follow the header")
    # last, once the layout is sound: a version 3 file's checksum
    version = metadata.get("format_version")
    if version in VERSIONS and ("crc32" in metadata or version not in ("1", "2")):  # (a later version: refused later)
        found, want = checksum({**header, "__metadata__": metadata}, memoryview(data)[8 + n :]), metadata.get("crc32")
        if found != want:
            raise WeightsFormatError(
                f"{where}: corrupt: the file's CRC-32 is {found}, its header says {want!r:.20} (a changed or "
                "damaged byte; copy or download the file again)"
            )
    return metadata, entries


def stamped(stored: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of `stored` with `metadata` and its crc32 added."""
    metadata = {k: v for k, v in metadata.items() if k != "crc32"}
    draft = save(stored, metadata=metadata)  # the same data, and the header the checksum covers
    n = int.from_bytes(draft[:8], "little")
    return save(
        stored, metadata={**metadata, "crc32": checksum(json.loads(draft[8 : 8 + n]), memoryview(draft)[8 + n :])}
    )


def checksum(header: dict, data: memoryview) -> str:
    """The CRC-32 of a safetensors header (its crc32 entry left out; canonical JSON) followed by its data, as 8 hex
    digits: what a version 3 engine file stores in its metadata."""
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != "crc32"}
    canonical = json.dumps({**header, "__metadata__": meta}, sort_keys=True, separators=(",", ":")).encode()
    return f"{zlib.crc32(data, zlib.crc32(canonical)):08x}"


def _nbytes(shape: list[int], itemsize: int, cap: int) -> int:
    """The byte size of a tensor, or cap + 1 as soon as it exceeds cap (a header may list many huge dimensions)."""
    if 0 in shape:
        return 0
    n = itemsize
    for d in shape:
        n *= d
        if n > cap:
            return cap + 1
    return n


def tensors(data: bytes, entries: dict[str, Entry], where: str) -> dict[str, np.ndarray]:
    """The parsed tensors as aligned, writeable, native-endian copies (BF16 widened to float32)."""
    out = {}
    for name, (dtype, shape, offset) in entries.items():
        if dtype not in NUMPY:
            raise WeightsFormatError(f"{where}: tensor {name} is {dtype}, which this reader does not decode")
        stored = np.dtype(NUMPY[dtype])
        flat = np.frombuffer(data, stored, math.prod(shape), offset)
        if dtype == "BF16":
            out[name] = (flat.astype(np.uint32) << 16).view(np.float32).reshape(shape)  # a float32's high half
        else:
            out[name] = flat.astype(stored.newbyteorder("=")).reshape(shape)
    return out


def check_finite(tensors: dict[str, np.ndarray], where: str) -> None:
    """Every float tensor holds finite values: a NaN or an infinity in a weight would make every answer NaN (or
    silently wrong), so a file holding one is refused once, at load, naming the tensor."""
    for name, t in tensors.items():
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            bad = t[~np.isfinite(t)].flat[0]
            raise WeightsFormatError(
                f"{where}: tensor {name} holds {bad} at {int(np.argmin(np.isfinite(t).reshape(-1)))} (of "
                f"{t.size}): a corrupt file, or a model that diverged in training"
            )
