#!/usr/bin/env python
"""Mutation fuzzing of everything a user hands the engine (issue 25).

    python tools/fuzz.py --minutes 20                 # a campaign over every kind; its table at the end
    python tools/fuzz.py --seconds 150 --seed 0       # what CI runs (tests/test_fuzz.py)
    python tools/fuzz.py --replay tests/data/fuzz     # the kept reproducers, each run as a case again

Kinds of input, each mutated from real seeds:
  weights     the engine's own files (weights/): bytes, and the safetensors header as JSON
  checkpoint  a transformers directory: model.safetensors, preprocessor_config.json
  bin         pytorch_model.bin in torch's zip and legacy formats: bytes, the pickle, hostile pickles that would
              write a marker file (os.system, eval, exec, subprocess, runpy, dotted names; GLOBAL, STACK_GLOBAL,
              INST, OBJ, REDUCE, NEWOBJ over protocols 0-5), and keys nested 400,000 deep
  image       real photos as PNG, JPEG with EXIF, GIF, BMP, TIFF, WebP: bytes, PNG chunks, JPEG segments, bombs
  pixels      pixel_values of every dtype, rank, layout, size and value (NaN, inf, huge)
  config      config.json: hostile values in every field, the JSON text itself
Every case runs in a forked child with a time limit, and ends as one of
  answer   the engine answered (a config: transformers accepts it too, and answers the same)
  clean    an error of the engine's own (TinyVitError, or FileNotFoundError), one line naming the problem
  unclean  any other exception
  crash    the child died on a signal
  hang     the child outlived the time limit
  pickle   pickle code ran (its marker file appeared)
  silent   a different answer with no word: an engine file that changed, or a config on which transformers
           disagrees (refuses it, or answers otherwise)
Anything but answer and clean is a finding; its input is kept under --out as a reproducer (a case directory:
case.json says the kind and how to run it) and the command exits 1.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import zipfile
import zlib
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # two children at a time on two cores; set before numba loads

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import tinyvit_engine as tve  # noqa: E402
from tinyvit_engine.errors import TinyVitError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("weights", "checkpoint", "bin", "image", "pixels", "config")
OUTCOMES = ("answer", "clean", "unclean", "crash", "hang", "pickle", "silent")
FINDINGS = ("unclean", "crash", "hang", "pickle", "silent")
TIMEOUT = 30.0  # seconds per case; a sound case takes under 2 (the slow-path finding took 52)
DEMO = ROOT / "tests" / "data" / "demo" / "mobilevit-digits"
PHOTOS = sorted((ROOT / "tests" / "data" / "images").glob("*.*[gG]"))


# ---------------------------------------------------------------- running one case (in the child)


def run_case(case: Path) -> dict:
    """What the engine does with the case: {"outcome": "answer", "logits": [...]} or an exception's outcome."""
    spec = json.loads((case / "case.json").read_text())
    kind = spec["kind"]
    try:
        if kind == "image":
            model = tve.load(ROOT / "weights" / "mobilevit-digits.int8.safetensors")
            result = model.classify(str(case / spec["file"]), top_k=3)
            return {"outcome": "answer", "logits": [r["score"] for r in result]}
        if kind == "pixels":
            model = tve.load(ROOT / "weights" / "mobilevit-digits.int8.safetensors")
            logits = model(pixel_array(spec["pixels"]), return_dict=True).logits
            return {"outcome": "answer", "logits": np.asarray(logits, np.float64).ravel()[:20].tolist()}
        target = case / spec["file"] if kind == "weights" else case / "model"
        if spec.get("demo_weights"):  # a kept reproducer that did not change the weights: the seed's, put back
            shutil.copy(DEMO / "model.safetensors", target / "model.safetensors")
        model = tve.load(target)
        if kind == "config":  # through the checkpoint's own processor, as transformers' reference will be
            pixel_values = model.processor(PHOTOS[0])
        else:
            pixel_values = probe(64)
        logits = np.asarray(model(pixel_values, return_dict=True).logits, np.float64)  # whatever the config says
        if kind == "config":  # and the engine's own path over the same photo, which reads the config's settings
            model.classify(PHOTOS[0], top_k=3)
        np.save(case / "answer.npy", logits)
        return {"outcome": "answer", "logits": logits.ravel()[:20].tolist()}
    except (TinyVitError, FileNotFoundError) as e:
        return {"outcome": "clean", "error": f"{type(e).__name__}: {e}"[:400]}
    except Exception as e:  # noqa: BLE001 -- what the fuzzer exists to find
        return {
            "outcome": "unclean",
            "error": f"{type(e).__name__}: {e}"[:400],
            "trace": traceback.format_exc()[-3000:],
        }


def probe(side: int) -> np.ndarray:
    return np.random.default_rng(1).random((1, 3, side, side), dtype=np.float32)


def pixel_array(p: dict):
    """The pixel_values a pixels case describes (built in the child: some are not plain arrays)."""
    rng = np.random.default_rng(p["seed"])
    shape = tuple(p["shape"])
    if p["dtype"] == "list":
        return np.zeros(shape, np.float32).tolist()
    if p["dtype"] == "object":
        a = np.empty(shape, object)
        a.fill(p.get("fill", 0.5))
        return a
    a = np.asarray(rng.random(shape) * p.get("scale", 1.0)).astype(p["dtype"])
    if p.get("fill") is not None and a.size and a.dtype.kind in "fc":
        a.flat[rng.integers(0, a.size, max(1, a.size // 50))] = p["fill"]
    if p.get("layout") == "transposed" and a.ndim >= 2:
        a = a.swapaxes(-1, -2)
    elif p.get("layout") == "strided" and a.ndim >= 1:
        a = a[..., ::2]
    elif p.get("layout") == "reversed" and a.ndim >= 1:
        a = a[..., ::-1]
    elif p.get("layout") == "readonly":
        a = a.copy()
        a.flags.writeable = False
    elif p.get("layout") == "fortran":
        a = np.asfortranarray(a)
    return a


def child(case: Path) -> None:
    """Run the case and leave its result in case/result.json; never returns."""
    code = 0
    try:
        os.chdir(case)  # a hostile pickle's marker ("touch MARKER") lands in the case
        result = run_case(case)
        (case / "result.json").write_text(json.dumps(result))
    except BaseException:  # noqa: BLE001 -- a result that cannot be written: the parent calls it unclean
        code = 4
    finally:
        os._exit(code)


# ---------------------------------------------------------------- the reference (transformers, its own process)

REFERENCE = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np, torch, transformers
    torch.set_num_threads(1); transformers.logging.set_verbosity_error(); warnings.simplefilter("ignore")
    transformers.utils.logging.disable_progress_bar()
    from PIL import Image
    for line in sys.stdin:
        ask = json.loads(line)
        try:
            if ask["op"] == "bins":  # the seeds' pytorch_model.bin, both formats, from a safetensors checkpoint
                from safetensors.torch import load_file
                state = load_file(ask["src"])
                torch.save(state, ask["zip"])
                torch.save(state, ask["legacy"], _use_new_zipfile_serialization=False)
                answer = {"ok": True}
            else:  # transformers on a checkpoint directory and a photo, through its own processor
                model = transformers.AutoModelForImageClassification.from_pretrained(ask["dir"]).eval()
                processor = transformers.AutoImageProcessor.from_pretrained(ask["dir"])
                inputs = processor(images=Image.open(ask["photo"]).convert("RGB"), return_tensors="pt")
                with torch.no_grad():
                    logits = model(**inputs, return_dict=True).logits.numpy().astype(np.float64)
                answer = {"ok": logits.tolist()}
        except Exception as e:
            answer = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps(answer), flush=True)
    """
)


class Reference:
    """transformers in a process of its own (torch's threads never meet the forked children)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REFERENCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip

    def ask(self, **kw) -> dict:
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the transformers reference process died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------- mutators


INTERESTING = [0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 10**30]
JSON_VALUES = [
    0, 1, -1, 2, 4, 1000, 2**31, 2**63, -(2**63), 10**400, 0.0, 0.5, 1.5, 2.0, -2.0, 1e30, 1e-30, 1e308,
    float("inf"), float("-inf"), float("nan"), True, False, None, "", "5", "silu", "relu", "x" * 10000,
    [], [1], [1, 2], [1, 2, 3], [0, 0, 0], [-1, 2, 3], [1.5, 2, 3], [10**9] * 3, ["a", "b", "c"], [[1]], {},
    {"a": 1}, {"0": "a", "5": "b"}, [2, 2], 1e30,
]  # fmt: skip
CONFIG_KEYS = [
    "model_type", "architectures", "num_channels", "image_size", "patch_size", "hidden_sizes", "neck_hidden_sizes",
    "num_attention_heads", "mlp_ratio", "expand_ratio", "hidden_act", "conv_kernel_size", "output_stride",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob", "initializer_range",
    "layer_norm_eps", "qkv_bias", "aspp_out_channels", "atrous_rates", "aspp_dropout_prob", "num_labels",
    "id2label", "label2id", "problem_type", "output_hidden_states", "return_dict", "torch_dtype", "width_multiplier",
]  # fmt: skip
PREPROCESSOR_KEYS = [
    "do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_center_crop", "crop_size",
    "do_flip_channel_order", "image_processor_type", "default_to_square", "do_reduce_labels",
]  # fmt: skip


def mutate_bytes(rng: random.Random, data: bytes, splice: bytes = b"") -> bytes:
    """One to four byte-level edits: bit flips, interesting values, inserts, deletes, repeats, truncation, splices."""
    d = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        at = rng.randrange(len(d) + 1) if d else 0
        if op == 0 and d:
            d[min(at, len(d) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and len(d) >= 8:
            at = min(at, len(d) - 8)
            width, order = rng.choice([(1, "<"), (2, "<"), (4, "<"), (8, "<"), (2, ">"), (4, ">"), (8, ">")])
            v = rng.choice(INTERESTING) % (1 << (8 * width))
            d[at : at + width] = v.to_bytes(width, "little" if order == "<" else "big")
        elif op == 2:
            d[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and d:
            del d[at : at + rng.randint(1, 64)]
        elif op == 4 and d:
            d[at:at] = d[at : at + rng.randint(1, 256)] * rng.randint(2, 8)
        elif op == 5 and d:
            del d[rng.randrange(len(d)) :]
        elif op == 6 and splice:
            s = rng.randrange(len(splice))
            d[at : at + 32] = splice[s : s + 32]
        elif op == 7 and d:
            d[at : at + 4] = bytes([rng.choice([0, 0xFF, 0x7F, 0x80])]) * 4
    return bytes(d)


def mutate_json_value(rng: random.Random, doc: dict, keys: list[str]) -> dict:
    doc = dict(doc)
    for _ in range(rng.randint(1, 2)):
        key = rng.choice(keys + list(doc))
        op = rng.randrange(6)
        if op == 0 and key in doc:
            del doc[key]
        elif op == 1 and isinstance(doc.get(key), list) and doc[key]:
            items = list(doc[key])
            items[rng.randrange(len(items))] = rng.choice(JSON_VALUES)
            doc[key] = items
        elif op == 2 and isinstance(doc.get(key), (int, float)) and not isinstance(doc[key], bool):
            doc[key] = rng.choice([doc[key] * 2, doc[key] + 1, -doc[key], doc[key] * 1000, float(doc[key]), 0])
        else:
            doc[key] = rng.choice(JSON_VALUES)
    return doc


def json_text(rng: random.Random, doc) -> bytes:
    """JSON as Python writes it (NaN and Infinity included, as transformers' files may hold them), or worse."""
    op = rng.randrange(12)
    if op == 0:
        return b"[" * rng.choice([1000, 100_000])
    if op == 1:
        return json.dumps([doc]).encode()
    if op == 2:
        return mutate_bytes(rng, json.dumps(doc).encode())
    return json.dumps(doc).encode()


def mutate_safetensors(rng: random.Random, data: bytes) -> bytes:
    """The header as JSON: an entry's dtype, shape or offsets, or the metadata, given hostile values."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = rng.choice(list(header))
    if name == "__metadata__" or rng.random() < 0.3:
        meta = dict(header.get("__metadata__") or {})
        key = rng.choice(["format", "format_version", "storage", "config", "preprocessor_config", "crc32"])
        if key in ("config", "preprocessor_config") and meta.get(key):
            inner = json.loads(meta[key]) if rng.random() < 0.8 else {}
            keys = CONFIG_KEYS if key == "config" else PREPROCESSOR_KEYS
            meta[key] = json.dumps(mutate_json_value(rng, inner, keys) if isinstance(inner, dict) else inner)
        else:
            meta[key] = rng.choice([*map(str, JSON_VALUES[:12]), "1", "2", "3", "4", "int8", "float16", ""])
        header["__metadata__"] = meta
    else:
        entry = dict(header[name])
        field = rng.choice(["dtype", "shape", "data_offsets"])
        entry[field] = rng.choice(JSON_VALUES + ["F16", "I8", "F64", "BF16", "U8", [0, 0], [1, 2, 3, 4, 5]])
        header[name] = entry
    raw = json.dumps(header).encode()
    length = len(raw) + rng.choice([0, 0, 0, 0, 1, -1, 8, 2**40])
    return max(length, 0).to_bytes(8, "little") + raw + data[8 + n :]


@functools.cache
def zeros_compressed(n: int) -> bytes:
    return zlib.compress(bytes(n), 9)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, at = [], 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        out.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return out


def png_chunk(kind: bytes, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else min(max(length, 0), 2**32 - 1)
    return struct.pack(">I", size) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def mutate_png(rng: random.Random, data: bytes) -> bytes:
    """A chunk with a wrong length, a huge text or image chunk, a bomb, chunks dropped or repeated."""
    chunks = png_chunks(data)
    op = rng.randrange(7)
    if op == 0:  # a wrong length field (Truncated IHDR / pHYs)
        i = rng.randrange(len(chunks))
        kind, body = chunks[i]
        out = [png_chunk(k, b) for k, b in chunks[:i]]
        out.append(png_chunk(kind, body, len(body) + rng.choice([-1, 1, -len(body), 4, 2**31])))
        out += [png_chunk(k, b) for k, b in chunks[i + 1 :]]
        return data[:8] + b"".join(out)
    if op == 1:  # a zTXt or iTXt that inflates to 64 MiB
        text = zeros_compressed(64 << 20)
        extra = png_chunk(b"zTXt", b"comment\0\0" + text) if rng.random() < 0.5 else png_chunk(
            b"iTXt", b"comment\0\1\0\0\0" + text
        )  # fmt: skip
        return data[:8] + png_chunk(*chunks[0]) + extra + b"".join(png_chunk(k, b) for k, b in chunks[1:])
    if op == 2:  # an IHDR claiming 20000 x 20000 (or 1 x 10**6)
        w, h = rng.choice([(20000, 20000), (1, 10**6), (10**6, 1), (65535, 65535), (0, 10)])
        ihdr = struct.pack(">II", w, h) + chunks[0][1][8:]
        return data[:8] + png_chunk(b"IHDR", ihdr) + b"".join(png_chunk(k, b) for k, b in chunks[1:])
    if op == 3:  # a small file whose IDAT inflates to a huge image
        w = h = rng.choice([4096, 12000, 30000])
        raw = zeros_compressed((w + 1) * min(h, 4096))
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
        return data[:8] + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b"")
    if op == 4:  # a chunk dropped or repeated
        i = rng.randrange(len(chunks))
        body = chunks[:i] + chunks[i + 1 :] if rng.random() < 0.5 else chunks[: i + 1] + chunks[i:]
        return data[:8] + b"".join(png_chunk(k, b) for k, b in body)
    if op == 5:  # a chunk's body mutated, its CRC made right (so that the decoder reads it)
        i = rng.randrange(len(chunks))
        kind, body = chunks[i]
        chunks[i] = (kind, mutate_bytes(rng, body) if body else body)
        return data[:8] + b"".join(png_chunk(k, b) for k, b in chunks)
    return mutate_bytes(rng, data)


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each marker segment before the scan."""
    out, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xDA:
            break
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        out.append((at, at + 2 + length))
        at += 2 + length
    return out


def mutate_jpeg(rng: random.Random, data: bytes) -> bytes:
    """The EXIF segment cut short or given wild offsets, a frame header with huge sizes, a segment's length."""
    segments = jpeg_segments(data)
    exif = [s for s in segments if data[s[0] + 1] == 0xE1]
    if exif and rng.random() < 0.5:
        start, end = exif[0]
        body = bytearray(data[start + 4 : end])
        op = rng.randrange(3)
        if op == 0:  # the IFD cut short (struct.error inside exif_transpose)
            body = body[: rng.randrange(6, max(7, len(body)))]
        elif op == 1:  # an offset or count in the TIFF structure set wild
            at = rng.randrange(6, max(7, len(body) - 4))
            body[at : at + 4] = (rng.choice(INTERESTING[:12]) % 2**32).to_bytes(4, rng.choice(["little", "big"]))
        else:
            body = bytearray(mutate_bytes(rng, bytes(body)))
        segment = b"\xff\xe1" + struct.pack(">H", min(len(body) + 2, 65535)) + bytes(body[:65533])
        return data[:start] + segment + data[end:]
    sof = [s for s in segments if data[s[0] + 1] in (0xC0, 0xC1, 0xC2)]
    if sof and rng.random() < 0.5:
        start, _ = sof[0]
        d = bytearray(data)
        h, w = rng.choice([(65535, 65535), (0, 100), (100, 0), (1, 65535)])
        d[start + 5 : start + 9] = struct.pack(">HH", h, w)
        return bytes(d)
    if segments and rng.random() < 0.5:
        start, end = rng.choice(segments)
        d = bytearray(data)
        d[start + 2 : start + 4] = struct.pack(">H", rng.choice([0, 1, 2, 65535, end - start]))
        return bytes(d)
    return mutate_bytes(rng, data)


# hostile pickles: each would create MARKER if any of its code ran
CALLS = [
    ("os", "system", "touch '{m}'"),
    ("posix", "system", "touch '{m}'"),
    ("builtins", "eval", "open({m!r}, 'w').close()"),
    ("builtins", "exec", "open({m!r}, 'w').close()"),
    ("subprocess", "call", ["touch", "{m}"]),
    ("subprocess", "Popen", ["touch", "{m}"]),
    ("runpy", "_run_code", "open({m!r}, 'w').close()"),
    ("collections", "os.system", "touch '{m}'"),
    ("torch.serialization", "os.system", "touch '{m}'"),
    ("builtins", "getattr", None),
]


def hostile_pickle(rng: random.Random, marker: str) -> bytes:
    module, name, arg = rng.choice(CALLS)
    if arg is None:  # getattr(os, "system")("touch ...") as a REDUCE chain
        call = b"c__builtin__\ngetattr\n(cos\n" + b"S'system'\ntR(S'touch " + marker.encode() + b"'\ntR"
        return b"\x80\x02}(S'w'\n" + call + b"u."
    arg = [a.format(m=marker) for a in arg] if isinstance(arg, list) else arg.format(m=marker)
    args = pickle.dumps((arg,), 0)[:-1]  # the argument tuple, protocol 0, without its STOP
    glob = f"c{module}\n{name}\n".encode()
    how = rng.randrange(6)
    if how == 0:  # GLOBAL + REDUCE
        body = glob + args + b"R"
    elif how == 1:  # STACK_GLOBAL (protocol 4)
        m, n = module.encode(), name.encode()
        body = b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93" + args + b"R"
    elif how == 2:  # INST
        body = b"(" + pickle.dumps(arg, 0)[:-1] + f"i{module}\n{name}\n".encode()
    elif how == 3:  # OBJ
        body = b"(" + glob + pickle.dumps(arg, 0)[:-1] + b"o"
    elif how == 4:  # NEWOBJ
        body = glob + args + b"\x81"
    else:  # EXT1 of an extension code no one registered, then REDUCE
        body = b"\x82\x01" + args + b"R"
    protocol = rng.randrange(6)
    head = b"" if protocol < 2 else b"\x80" + bytes([protocol])
    if rng.random() < 0.5:  # inside a state dict, under an ordinary name
        return head + b"}(S'classifier.weight'\n" + body + b"u."
    return head + body + b"."


def rezip(data: bytes, edit) -> bytes:
    """A torch zip archive with its members passed through edit(name, bytes), written with good CRCs."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info)))
    return out.getvalue()


def mutate_bin(rng: random.Random, data: bytes, marker: str, legacy: bool) -> bytes:
    op = rng.randrange(5)
    if op == 0:  # a hostile pickle where the state dict was
        evil = hostile_pickle(rng, marker)
        if legacy:
            head = b"".join(pickle.dumps(x, 2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
            return head + evil + pickle.dumps([], 2)
        return rezip(data, lambda n, b: evil if n.endswith("data.pkl") else b)
    if op == 1:  # a dict keyed by a tuple nested 400,000 deep (hashing it recursed in C: a segfault)
        deep = b"\x80\x02}" + b")" + b"\x85" * 400_000 + b"Ns."
        return rezip(data, lambda n, b: deep if n.endswith("data.pkl") else b) if not legacy else data[:0] + deep
    if op == 2 and not legacy:  # the pickle mutated, the zip made consistent around it
        return rezip(data, lambda n, b: mutate_bytes(rng, b) if n.endswith("data.pkl") else b)
    if op == 3 and not legacy:  # a storage record mutated with a good CRC: different weights, not an error
        keys = [n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if "/data/" in n]
        pick = rng.choice(keys)
        return rezip(data, lambda n, b: mutate_bytes(rng, b) if n == pick else b)
    return mutate_bytes(rng, data)


def pixels_spec(rng: random.Random) -> dict:
    dtype = rng.choice(["float32", "float32", "float16", "float64", "int64", "uint8", "bool", "complex64", "object",
                        "list"])  # fmt: skip
    rank = rng.choice([4, 4, 4, 0, 1, 2, 3, 5])
    dims = [rng.choice([1, 2, 3]), rng.choice([3, 3, 1, 4, 0]), *(rng.choice([64, 1, 2, 7, 33, 300]) for _ in "hw")]
    shape = (dims + [2])[:rank] if rank <= 5 else dims
    return {
        "seed": rng.randrange(10**6), "dtype": dtype, "shape": shape,
        "fill": rng.choice([None, None, float("nan"), float("inf"), -float("inf"), 1e30, -1e30]),
        "scale": rng.choice([1.0, 255.0, 1e6]),
        "layout": rng.choice([None, None, "transposed", "strided", "reversed", "readonly", "fortran"]),
    }  # fmt: skip


# ---------------------------------------------------------------- seeds and cases (in the parent)


class Seeds:
    """The real inputs mutations start from, made once in a scratch directory."""

    def __init__(self, root: Path, reference: Reference) -> None:
        self.weights = {p.name: p.read_bytes() for p in (ROOT / "weights").glob("mobilevit-digits*.safetensors")}
        self.config = json.loads((DEMO / "config.json").read_text())
        self.preprocessor = json.loads((DEMO / "preprocessor_config.json").read_text())
        self.safetensors = (DEMO / "model.safetensors").read_bytes()
        zip_bin, legacy_bin = root / "zip.bin", root / "legacy.bin"
        made = reference.ask(op="bins", src=str(DEMO / "model.safetensors"), zip=str(zip_bin), legacy=str(legacy_bin))
        if "error" in made:
            raise RuntimeError(f"could not make the .bin seeds: {made['error']}")
        self.bins = {"zip": zip_bin.read_bytes(), "legacy": legacy_bin.read_bytes()}
        self.images = self._images()

    @staticmethod
    def _images() -> dict[str, bytes]:
        """Each photo, small, in the formats Pillow decodes with its own code: PNG (RGB, palette, 16-bit grey,
        LA), JPEG with an EXIF orientation, GIF, BMP, TIFF, WebP."""
        out = {}
        for i, photo in enumerate(PHOTOS):
            image = Image.open(photo).convert("RGB")
            image.thumbnail((96, 96))
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate
            variants = {
                "png": (image, {}), "p.png": (image.convert("P"), {}), "la.png": (image.convert("LA"), {}),
                "i16.png": (image.convert("I;16"), {}), "jpg": (image, {"exif": exif.tobytes()}), "gif": (image, {}),
                "bmp": (image, {}), "tiff": (image, {}), "webp": (image, {}),
            }  # fmt: skip
            for ext, (img, kw) in variants.items():
                buffer = io.BytesIO()
                img.save(buffer, format={"jpg": "JPEG", "tiff": "TIFF"}.get(ext, ext.split(".")[-1].upper()), **kw)
                out[f"{i}.{ext}"] = buffer.getvalue()
        return out


def make_case(rng: random.Random, kind: str, seeds: Seeds, case: Path) -> dict:
    """Write one mutated input into `case` and return its case.json."""
    case.mkdir(parents=True)
    marker = "MARKER"  # relative: the child runs in the case directory
    spec: dict = {"kind": kind}
    if kind == "weights":
        name = rng.choice(sorted(seeds.weights))
        data = seeds.weights[name]
        data = mutate_safetensors(rng, data) if rng.random() < 0.4 else mutate_bytes(rng, data)
        (case / name).write_bytes(data)
        spec.update(file=name, seed_file=name)
    elif kind in ("checkpoint", "bin", "config"):
        model = case / "model"
        model.mkdir()
        config, preprocessor = dict(seeds.config), dict(seeds.preprocessor)
        config_text = preprocessor_text = None
        if kind == "checkpoint":
            if rng.random() < 0.7:
                data = seeds.safetensors
                (model / "model.safetensors").write_bytes(
                    mutate_safetensors(rng, data) if rng.random() < 0.5 else mutate_bytes(rng, data)
                )
            else:
                (model / "model.safetensors").write_bytes(seeds.safetensors)
                preprocessor_text = json_text(rng, mutate_json_value(rng, preprocessor, PREPROCESSOR_KEYS))
        elif kind == "bin":
            legacy = rng.random() < 0.5
            data = seeds.bins["legacy" if legacy else "zip"]
            (model / "pytorch_model.bin").write_bytes(mutate_bin(rng, data, marker, legacy))
        else:
            (model / "model.safetensors").write_bytes(seeds.safetensors)
            if rng.random() < 0.8:
                config_text = json_text(rng, mutate_json_value(rng, config, CONFIG_KEYS))
            else:
                preprocessor_text = json_text(rng, mutate_json_value(rng, preprocessor, PREPROCESSOR_KEYS))
        (model / "config.json").write_bytes(config_text or json.dumps(config).encode())
        (model / "preprocessor_config.json").write_bytes(preprocessor_text or json.dumps(preprocessor).encode())
    elif kind == "image":
        name = rng.choice(sorted(seeds.images))
        data = seeds.images[name]
        if name.endswith(".png") and rng.random() < 0.6:
            data = mutate_png(rng, data)
        elif name.endswith(".jpg") and rng.random() < 0.6:
            data = mutate_jpeg(rng, data)
        else:
            data = mutate_bytes(rng, data, rng.choice(list(seeds.images.values())))
        (case / f"image.{name.split('.', 1)[1]}").write_bytes(data)
        spec.update(file=f"image.{name.split('.', 1)[1]}")
    else:
        spec.update(pixels=pixels_spec(rng))
    (case / "case.json").write_text(json.dumps(spec))
    return spec


# ---------------------------------------------------------------- the campaign


class Campaign:
    def __init__(self, out: Path, jobs: int, reference: Reference, baselines: dict) -> None:
        self.out, self.jobs, self.reference, self.baselines = out, jobs, reference, baselines
        self.table = {k: dict.fromkeys(OUTCOMES, 0) for k in KINDS}
        self.findings: list[tuple[str, str, str]] = []
        self.mismatches: list[str] = []

    def run(self, cases) -> None:
        """Run (kind, case dir) pairs, `jobs` at a time, each in a forked child."""
        running: dict[int, tuple[str, Path, float]] = {}
        cases = iter(cases)
        exhausted = False
        while running or not exhausted:
            while not exhausted and len(running) < self.jobs:
                item = next(cases, None)
                if item is None:
                    exhausted = True
                    break
                kind, case = item
                pid = os.fork()
                if pid == 0:
                    child(case)
                running[pid] = (kind, case, time.monotonic())
            for pid, (kind, case, started) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == 0 and time.monotonic() - started > TIMEOUT:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    self.record(kind, case, "hang", f"still running after {TIMEOUT:.0f} s")
                    del running[pid]
                elif done:
                    del running[pid]
                    self.finish(kind, case, status)
            time.sleep(0.005)

    def finish(self, kind: str, case: Path, status: int) -> None:
        if os.WIFSIGNALED(status):
            return self.record(kind, case, "crash", f"killed by signal {os.WTERMSIG(status)}")
        if (case / "MARKER").exists():
            return self.record(kind, case, "pickle", "the marker file exists: pickle code ran")
        result_file = case / "result.json"
        if not result_file.exists():
            return self.record(kind, case, "unclean", f"exit code {os.WEXITSTATUS(status)} and no result")
        result = json.loads(result_file.read_text())
        outcome, detail = result["outcome"], result.get("error", "")
        if outcome == "answer":
            outcome, detail = self.check_answer(kind, case)
        self.record(kind, case, outcome, detail if outcome != "unclean" else result.get("trace", detail))

    def check_answer(self, kind: str, case: Path) -> tuple[str, str]:
        """An answer is silent wrongness when it should not differ (an engine file: it carries a checksum) or when
        transformers refuses the config or answers otherwise."""
        spec = json.loads((case / "case.json").read_text())
        if kind == "weights":
            got, want = np.load(case / "answer.npy"), self.baselines[spec["seed_file"]]
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                return "silent", "a changed engine file loaded and answered differently"
        if kind == "config":
            theirs = self.reference.ask(op="run", dir=str(case / "model"), photo=str(PHOTOS[0]))
            if "error" in theirs:
                return "silent", f"the engine answered; transformers refuses: {theirs['error']}"
            got, want = np.load(case / "answer.npy"), np.asarray(theirs["ok"])
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max()):
                return "silent", f"the engine answers {got.ravel()[:3]}, transformers {want.ravel()[:3]}"
        return "answer", ""

    def record(self, kind: str, case: Path, outcome: str, detail: str) -> None:
        self.table[kind][outcome] += 1
        expect = json.loads((case / "case.json").read_text()).get("expect")
        if expect and outcome not in ([expect] if isinstance(expect, str) else expect):  # a reproducer changed
            self.mismatches.append(f"{case.name}: {outcome}, expected {expect}: {' '.join(detail.split())[:300]}")
            print(f"CHANGED {self.mismatches[-1]}", flush=True)
        elif expect:
            print(f"ok {case.name}: {outcome}: {' '.join(detail.split())[:200]}", flush=True)
        if outcome in FINDINGS:
            kept = self.out / f"{kind}-{outcome}-{case.name}"
            shutil.copytree(case, kept, dirs_exist_ok=True, ignore=shutil.ignore_patterns("result.json", "*.npy"))
            weights = kept / "model" / "model.safetensors"
            if weights.exists() and weights.read_bytes() == (DEMO / "model.safetensors").read_bytes():
                weights.unlink()  # the seed's weights, unchanged: the reproducer names them instead of a copy
                spec = json.loads((kept / "case.json").read_text())
                (kept / "case.json").write_text(json.dumps({**spec, "demo_weights": True}))
            (kept / "finding.txt").write_text(f"{outcome}: {detail}\n")
            self.findings.append((kind, outcome, f"{kept}: {' '.join(detail.split())[:300]}"))
            print(f"FINDING {kind} {outcome}: {kept}\n  {' '.join(detail.split())[:300]}", flush=True)
        else:
            shutil.rmtree(case, ignore_errors=True)

    def report(self) -> str:
        lines = ["| kind | cases | " + " | ".join(OUTCOMES) + " |", "|---|" + "---|" * (len(OUTCOMES) + 1)]
        for kind, row in self.table.items():
            lines.append(f"| {kind} | {sum(row.values())} | " + " | ".join(str(row[o]) for o in OUTCOMES) + " |")
        total = {o: sum(r[o] for r in self.table.values()) for o in OUTCOMES}
        lines.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
        return "\n".join(lines)


def baselines(scratch: Path) -> dict:
    """Each engine file's answer, unmutated, computed in a child like every case."""
    out = {}
    for name in sorted(p.name for p in (ROOT / "weights").glob("mobilevit-digits*.safetensors")):
        case = scratch / f"baseline-{name}"
        case.mkdir()
        shutil.copy(ROOT / "weights" / name, case / name)
        (case / "case.json").write_text(json.dumps({"kind": "weights", "file": name, "seed_file": name}))
        pid = os.fork()
        if pid == 0:
            child(case)
        os.waitpid(pid, 0)
        result = json.loads((case / "result.json").read_text())
        if result["outcome"] != "answer":
            raise RuntimeError(f"the unmutated {name} gives no answer: {result}")
        out[name] = np.load(case / "answer.npy")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, help="how long to fuzz (default: 150)")
    parser.add_argument("--minutes", type=float, help="how long to fuzz, in minutes")
    parser.add_argument("--seed", type=int, default=0, help="the campaign's random seed (CI: 0)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"a comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--jobs", type=int, default=2, help="cases at a time (default 2)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="where reproducers are kept")
    parser.add_argument("--replay", type=Path, help="run the case directories under this folder instead")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes else (args.seconds or 150.0)
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds {sorted(unknown)}; the kinds are {', '.join(KINDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    reference = Reference()
    scratch = Path(tempfile.mkdtemp(prefix="tinyvit-fuzz-"))
    try:
        campaign = Campaign(args.out, args.jobs, reference, baselines(scratch))
        if args.replay:
            cases = []
            for found in sorted(p.parent for p in args.replay.rglob("case.json")):
                copy = scratch / "replay" / found.name
                shutil.copytree(found, copy, ignore=shutil.ignore_patterns("MARKER", "result.json", "*.npy"))
                cases.append((json.loads((copy / "case.json").read_text())["kind"], copy))
            campaign.run(cases)
        else:
            seeds = Seeds(scratch, reference)
            rng = random.Random(args.seed)
            deadline = time.monotonic() + seconds

            def generate():
                n = 0
                while time.monotonic() < deadline:
                    kind = kinds[n % len(kinds)]
                    case = scratch / f"{n:06d}"
                    n += 1
                    try:
                        make_case(rng, kind, seeds, case)
                    except Exception as e:  # noqa: BLE001 -- a mutator's own slip: say so, and go on
                        print(f"(skipped a {kind} case the mutator could not make: {type(e).__name__}: {e})")
                        shutil.rmtree(case, ignore_errors=True)
                        continue
                    yield kind, case

            campaign.run(generate())
        print(campaign.report())
        return 1 if campaign.findings or campaign.mismatches else 0
    finally:
        reference.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
