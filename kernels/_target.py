"""Which machine code the kernels run, and where it is kept: compiled kernels that ship, and a cache per user.

Numba compiles for the host CPU by default, at a kernel's first call, and caches the code beside the source. A
fresh machine (a container, a board of an edge fleet) would pay that compile before its first answer: 20-30 s on
two x86-64 cores, six minutes under arm64 emulation. So the kernels are compiled ahead, for portable targets, and
ship with the engine:

- TARGET is the best portable target this CPU can run: "x86-64-v4" (AVX-512 F/BW/CD/DQ/VL: Intel Skylake-SP and
  later Xeons, AMD Zen 4), "x86-64-v3" (AVX2, FMA, BMI2, F16C: every x86-64 CPU since Intel Haswell and AMD Zen),
  "aarch64" (ARMv8-A, whose NEON and FMA every 64-bit ARM CPU has), preferring one whose shipped kernels are
  current. Otherwise, or when asked (TINYVIT_TARGET=host, or NUMBA_CPU_NAME set), it is the host CPU, compiled on
  first use as before: a CPU without AVX2 or FMA, another architecture, or Numba already compiling for the host in
  this process. Another Python minor or Numba release than the shipped files were built with (their names and
  index say which) compiles the portable target on first use. WHY_COMPILE says why, and the first run says it once.
- AVX-512 code uses 512-bit vectors (WIDE): LLVM's own choice for Intel CPUs and x86-64-v4 is 256-bit, half of
  what the FMA units of a Xeon take per instruction (measured 95 vs 155-162 GFLOP/s on one core of an Intel Xeon).
- The tile shape follows the target (tile_rows): 8-row product tiles where the target has AVX-512's 32 vector
  registers at 512 bits (x86-64-v4, or TINYVIT_TARGET=host on an AVX-512 CPU), else 3 rows. TINYVIT_TILE_ROWS=3|8
  forces one (tests run both). Products one panel wide take a taller tile (tall_rows): 8 rows on AVX-512, 6 on
  64-bit ARM, 4 on AVX2.
- stamp() ties compiled code to everything it was made from: the kernel library's sources, the target (name, CPU,
  features) and the tile rows. Numba checks only a kernel's own file; an edit to a tile must reach its callers.
- SHIPPED/<tag>/ holds the compiled kernels of one target for one Python minor and one Numba release, with a
  manifest.json naming its stamp (`python -m tinyvit_engine.kernels.build` makes them; a test fails when they are
  stale). They are read, never written.
- cache_dir() is where this process's kernels load and compile: <cache>/tinyvit-engine/<tag>-<stamp>/, <cache>
  being TINYVIT_CACHE_DIR, NUMBA_CACHE_DIR, XDG_CACHE_HOME or ~/.cache (a temporary directory if none is
  writable). One directory per user, target and stamp, so an install owned by root, a second user, machines sharing
  a home directory, or an edited kernel never meet code that is not theirs. On first use the shipped files of this
  tag and stamp are copied in (2 MB, milliseconds); from then on Numba loads them like any cache entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import llvmlite.binding as llvm
import numba

HERE = Path(__file__).resolve().parent
SHIPPED = HERE / "_compiled"
# no jitted code in these (__init__ only imports), so not in the stamp (this file's choices enter it as the target and
# the tile rows)
NOT_STAMPED = {"__init__.py", "_bare.py", "warm.py", "coldstart.py", "build.py", "_target.py"}


@dataclass(frozen=True)
class Target:
    name: str  # "x86-64-v3", "aarch64" or "host"
    cpu: str  # LLVM's CPU name
    features: str  # LLVM's feature string ("": the CPU name's own)


V3 = ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe")  # x86-64-v3's features, as LLVM names them
V4 = V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
# LLVM's tuning for x86-64-v4 and Intel's AVX-512 CPUs prefers 256-bit vectors (fewer frequency drops on early
# Xeons); this turns the preference off, so loops and tiles use 512-bit zmm registers. On one core of a 2-core Intel
# Xeon (AVX-512), x86-64-v4: a multiply-add loop 95 -> 155 GFLOP/s; xx-small 17.4 -> 14.0 ms with the tiles as
# they were (6 rows)
WIDE = "-prefer-256-bit"
# machine -> its portable targets, best first, each with the host CPU features it needs
PORTABLE = {
    "x86_64": [(Target("x86-64-v4", "x86-64-v4", WIDE), V4), (Target("x86-64-v3", "x86-64-v3", ""), V3)],
    "aarch64": [(Target("aarch64", "generic", ""), ())],
}


def _warn(message: str) -> None:
    warnings.warn(f"tinyvit-engine: {message}", RuntimeWarning, stacklevel=3)


def is_wide(target: Target) -> bool:
    """Whether `target` compiles AVX-512 code at 512 bits (WIDE among its features)."""
    return WIDE in target.features.split(",")


def host(wide: bool = False) -> Target:
    """The host CPU as Numba compiles for it by default; wide: with 512-bit vectors where it has AVX-512 (WIDE), as
    TINYVIT_TARGET=host asks (apply() then sets the features, as for a portable target)."""
    features = llvm.get_host_cpu_features().flatten()
    if wide and "+avx512f" in features.split(","):
        features += f",{WIDE}"
    return Target("host", llvm.get_host_cpu_name(), features)


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def runnable_targets() -> list[Target]:
    """This machine's portable targets whose features the CPU has, best first."""
    features = set(llvm.get_host_cpu_features().flatten().split(","))
    return [t for t, needs in PORTABLE.get(machine(), []) if all(f"+{f}" in features for f in needs)]


def choose(numba_busy: bool) -> tuple[Target, str]:
    """(the target, why the kernels must compile for it: "" when its shipped kernels serve). numba_busy: Numba has
    compiled in this process already, for the host CPU (its target machine is made once).

    The best portable target this CPU can run whose shipped kernels are current; else the best it can run (compiled
    into the cache on first use); else the host. TINYVIT_TARGET=host, or the name of a portable target, chooses."""
    asked = os.environ.get("TINYVIT_TARGET", "portable")
    names = [t.name for ts in PORTABLE.values() for t, _ in ts]
    if asked not in ("portable", "host", *names):
        _warn(f"TINYVIT_TARGET={asked!r:.40} is none of portable, host, {', '.join(names)}; using portable")
        asked = "portable"
    if asked == "host":
        return host(wide=True), "TINYVIT_TARGET=host asks for kernels tuned to this CPU"
    candidates = PORTABLE.get(machine(), [])
    if not candidates:
        return host(), f"no compiled kernels ship for {machine()}"
    features = set(llvm.get_host_cpu_features().flatten().split(","))
    runnable = runnable_targets()
    if os.environ.get("TINYVIT_BUILD_INTO") and asked != "portable":  # kernels/build.py, which only compiles: any
        runnable = [t for t, _ in candidates]  # target of this machine (an x86-64-v4 build on an AVX2 CPU, say)
    if asked != "portable":
        runnable = [t for t in runnable if t.name == asked]
    if not runnable:
        wanted, needs = next((t, n) for t, n in reversed(candidates) if asked in ("portable", t.name))
        missing = ", ".join(f for f in needs if f"+{f}" not in features).upper()
        return host(), f"this CPU lacks {missing}, which the shipped {wanted.name} kernels use"
    chosen = (os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES"))
    if chosen != (None, None):  # ours, inherited by a compiling helper; else the user's own choice of CPU
        runnable = [t for t in runnable if (t.cpu, t.features) == chosen]
        if not runnable:
            return host(), "NUMBA_CPU_NAME / NUMBA_CPU_FEATURES choose the CPU"
    if numba_busy:
        return host(), "Numba compiled for this CPU in this process before tinyvit_engine was imported"
    served = [t for t in runnable if shipped(t) is not None]
    return (served[0], "") if served else (runnable[0], why_not_shipped(runnable[0]))


def apply(target: Target) -> None:
    """Make Numba compile (and look up its cache) for `target`: its CPU name and features, as the NUMBA_CPU_NAME
    and NUMBA_CPU_FEATURES variables would, set in the environment too, so Numba's re-reading of it keeps them and
    the compiling helper (kernels/warm.py in a second process) makes the same choice. For the host, a portable
    choice inherited from a parent process (which set them so) is taken back, unless the host's own features are
    set (512-bit vectors on AVX-512)."""
    if target.name != "host" or is_wide(target):
        os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"] = target.cpu, target.features
        numba.config.CPU_NAME, numba.config.CPU_FEATURES = target.cpu, target.features
        return
    inherited = (os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES"))
    if inherited in {(t.cpu, t.features) for ts in PORTABLE.values() for t, _ in ts}:
        del os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"]
        numba.config.CPU_NAME = numba.config.CPU_FEATURES = None


def tile_rows(target: Target) -> int:
    """Rows of the wide product tile (_gemm.py): 8 where the target has AVX-512's 32 vector registers at 512 bits
    (WIDE: 16 zmm sums, 2 weight vectors, the broadcasts folded into the multiply-adds), else 3. Measured on a
    2-core Intel Xeon (AVX-512, 512-bit vectors), 1 thread, fastest of 30, two alternating rounds: xx-small
    14.0-14.3 ms with 6 rows, 13.5-13.7 with 8, 14.0-14.1 with 10; v2-0.5 12.5-12.7, 11.8-11.9 and 12.3-12.6."""
    forced = os.environ.get("TINYVIT_TILE_ROWS")
    if forced in ("3", "8"):
        return int(forced)
    if forced is not None:
        _warn(f"TINYVIT_TILE_ROWS={forced!r:.40} is neither 3 nor 8; the target's choice is used")
    return 8 if is_wide(target) else 3


@functools.cache
def _sources() -> bytes:
    """The library's stamped sources, read once per process (the stamp is asked for several times at start-up)."""
    return b"".join(
        p.name.encode() + b"\0" + p.read_bytes() for p in sorted(HERE.glob("*.py")) if p.name not in NOT_STAMPED
    )


def tall_rows(target: Target) -> int:
    """Rows of the one-panel product tile (_gemm.TALL): 8 on AVX-512 (as many as the wide tile: 8 zmm sums; 12 rows
    measured no faster), 6 on 64-bit ARM's 32 registers (6 x 4 sums), 4 on AVX2's 16. There 6 x 2 sums, 2 weight
    vectors and a broadcast would fit in 16 ymm registers, but LLVM keeps the 6 broadcasts live at once, and the
    loop spilled sums to the stack (4 stack loads and stores and 12 register moves per step, in the machine code of
    x86-64-v3); 4 rows keep 8 sums and do not spill. Measured on Zen 3, 1 thread: xx-small's attention at N = 256
    (16 sequence-heads) 2.00-2.08 ms with 6 rows, 1.62 with 4 and 1.61-1.64 with 5; the whole model's sum of nodes
    17.50 -> 16.32 ms."""
    if tile_rows(target) == 8:
        return 8
    return 6 if target.name == "aarch64" or machine() == "aarch64" else 4


def vector_lanes(target: Target) -> int:
    """Channels per depthwise tile (depthwise_conv2d.py): a vector register's floats, 16 with AVX-512 at 512 bits,
    else 8 (one AVX2 register; two of ARM's NEON ones). It follows tile_rows, so TINYVIT_TILE_ROWS=8 forces both
    AVX-512 shapes (tests run them on any x86-64)."""
    return 16 if tile_rows(target) == 8 else 8


def stamp(target: Target) -> str:
    """A digest of everything the compiled kernels of `target` are made from."""
    digest = hashlib.sha256(json.dumps([asdict(target), tile_rows(target)]).encode())
    digest.update(_sources())
    return digest.hexdigest()[:16]


def tag(target: Target) -> str:
    return f"{target.name}-py{sys.version_info[0]}{sys.version_info[1]}-numba{numba.__version__}"


def manifest(target: Target) -> dict:
    return {
        "target": asdict(target),
        "tile_rows": tile_rows(target),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "numba": numba.__version__,
        "stamp": stamp(target),
    }


def shipped(target: Target) -> Path | None:
    """The shipped compiled kernels of `target` for this Python and Numba, if they are current."""
    folder = SHIPPED / tag(target)
    try:
        built = json.loads((folder / "manifest.json").read_text())
        ok = built["stamp"] == stamp(target) and built["files"] and all((folder / f).is_file() for f in built["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if ok and target.name != "host" else None


def why_not_shipped(target: Target) -> str:
    """Why the shipped kernels cannot serve a portable target: another Python or Numba, or edited sources."""
    built = [json.loads(m.read_text()) for m in sorted(SHIPPED.glob(f"{target.name}-*/manifest.json"))]
    if not built:
        return f"no compiled kernels ship for {target.name}"
    ours, theirs = manifest(target), built[-1]
    if theirs["stamp"] == stamp(target) and (theirs["python"], theirs["numba"]) == (ours["python"], ours["numba"]):
        return f"the shipped {target.name} kernels lack some of their files (a partial copy?)"
    if (theirs["python"], theirs["numba"]) != (ours["python"], ours["numba"]):
        return (
            f"the shipped {target.name} kernels are for Python {theirs['python']} with Numba {theirs['numba']}, "
            f"this is Python {ours['python']} with Numba {ours['numba']}"
        )
    return "the kernels' sources changed since the shipped ones were built (python -m tinyvit_engine.kernels.build)"


def _cache_root() -> Path:
    for variable in ("TINYVIT_CACHE_DIR", "NUMBA_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinyvit-engine"


def cache_dir(target: Target) -> Path:
    """This process's kernel cache (see the module's docstring), the shipped kernels copied in on first use."""
    if os.environ.get("TINYVIT_BUILD_INTO"):  # kernels/build.py: compile from nothing into this directory
        folder = Path(os.environ["TINYVIT_BUILD_INTO"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(json.dumps(manifest(target), indent=1) + "\n")
        return folder
    name = f"{tag(target)}-{stamp(target)}"
    for root in (_cache_root(), Path(tempfile.gettempdir()) / f"tinyvit-engine-{os.getuid()}"):
        folder = root / name
        try:
            _fill(folder, target)
            probe = tempfile.TemporaryFile(dir=folder)  # writable: Numba writes what it compiles here
            probe.close()
            return folder
        except OSError:
            continue
    raise OSError(f"no writable directory for the compiled kernels (set TINYVIT_CACHE_DIR): tried {_cache_root()}")


def _fill(folder: Path, target: Target) -> None:
    """Make the cache directory, with the shipped kernels in it if they are current (copied once: its manifest says
    whether they are in; each file is copied under a temporary name and renamed, so a reader never sees half)."""
    source = shipped(target)
    record = folder / "manifest.json"
    try:
        if json.loads(record.read_text()).get("shipped") == (source is not None):
            return
    except (OSError, ValueError, AttributeError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir() if source is not None else ():
        if f.name != "manifest.json":
            partial = folder / f".{f.name}.{os.getpid()}.part"
            shutil.copyfile(f, partial)
            os.replace(partial, folder / f.name)
    partial = folder / f".manifest.{os.getpid()}.part"
    partial.write_text(json.dumps({**manifest(target), "shipped": source is not None}, indent=1) + "\n")
    os.replace(partial, record)
