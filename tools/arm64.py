"""Run the engine on 64-bit ARM (aarch64) under emulation and hold it to this machine's results.

    python tools/arm64.py [--workdir DIR]       # as root on Debian, from the project's venv (torch for step 4)

1. Debian's qemu-user-static (installed if missing) runs aarch64 programs; arm64 becomes a foreign dpkg
   architecture so that apt can download its packages.
2. A sysroot: Debian's arm64 python3.11 and every library it needs, downloaded with `apt-get download` and
   unpacked with `dpkg -x` (nothing is installed into the host).
3. PyPI's aarch64 wheels of numpy, numba, llvmlite, pillow and safetensors (`pip download --platform`) and the
   engine's own wheel, unpacked into a site directory.
4. Here (x86-64): the demo classifier on examples/digit-*.png, and mobilevit-xx-small (the bench's real-scale random
   weights, 1000 labels) on a 256x256 input.
5. Under qemu-aarch64-static, from an empty Numba cache: the same, and the comparison (logits within 1e-4 of max
   |logits|, the same labels). The run also shows what the engine's x86-specific parts (glibc mallopt, CPU feature
   strings, the second compiling process) do on ARM.

Prints each step's time and exits non-zero if anything differs. tests/test_arm64.py runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "python3.11"
PACKAGES = [f"{PYTHON}-minimal:arm64", f"lib{PYTHON}-stdlib:arm64", "libstdc++6:arm64"]
NOT_NEEDED = {"dpkg", "install-info", "tar"}  # Pre-Depends of the stdlib's tools, not of the interpreter
# the engine's dependencies, as pip takes them
WHEELS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"]
RTOL = 1e-4

ON_ARM = """
import json, platform, sys, time
import numpy as np
start = time.perf_counter()
import tinyvit_engine as tve
import llvmlite.binding as llvm
from numba.core import event
from tinyvit_engine.kernels import _jit
report = {"machine": platform.machine(), "cpu": llvm.get_host_cpu_name(), "import_s": time.perf_counter() - start}
report["target"], report["why_compile"] = _jit.TARGET.name, _jit.WHY_COMPILE
compiled = event.RecordingListener()
event.register("numba:compile", compiled)
paths = json.loads(sys.argv[1])
demo = tve.load(paths["demo"])
start = time.perf_counter()
report["demo"] = demo(demo.processor(paths["digits"])).logits.tolist()
report["first_run_s"] = time.perf_counter() - start  # the cache starts empty: shipped kernels, or compiling
bench = tve.load(paths["bench"])
x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
bench(x)
start = time.perf_counter()
report["bench"] = bench(x).logits.tolist()
report["bench_s"] = time.perf_counter() - start
report["compiled"] = len({e.data["dispatcher"] for _, e in compiled.buffer})
print(json.dumps(report))
"""


def step(name: str, start: float) -> None:
    print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], check=True, **kwargs)


def emulator() -> str:
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        run("apt-get", "update", "-q", stdout=subprocess.DEVNULL)
        run("apt-get", "install", "-y", "-q", "qemu-user-static", stdout=subprocess.DEVNULL)
        qemu = shutil.which("qemu-aarch64-static")
    return qemu


def sysroot(work: Path) -> Path:
    root = work / "sysroot"
    if (root / "usr" / "bin" / PYTHON).exists():
        return root
    if "arm64" not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout:
        run("dpkg", "--add-architecture", "arm64")
        run("apt-get", "update", "-q", stdout=subprocess.DEVNULL)
    depends = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"]
        + ["--no-replaces", "--no-enhances", "--no-pre-depends", *PACKAGES],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wanted = sorted({p for p in depends if p.endswith(":arm64") and p.split(":")[0] not in NOT_NEEDED})
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    run("apt-get", "download", *wanted, cwd=debs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for deb in sorted(debs.glob("*.deb")):
        run("dpkg", "-x", deb, root)
    return root


def site(work: Path) -> Path:
    target = work / "site"
    if (target / "tinyvit_engine").exists():
        shutil.rmtree(target / "tinyvit_engine")  # the engine is always the current checkout
    wheels = work / "wheels"
    if not list(wheels.glob("numba-*.whl")):
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        run(
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "-d",
            wheels,
            *WHEELS,
        )
    engine = work / "engine"
    shutil.rmtree(engine, ignore_errors=True)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", engine, ROOT)
    for wheel in [*wheels.glob("*.whl"), *engine.glob("*.whl")]:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)  # a wheel is a zip of what goes into site-packages
    return target


def here(work: Path) -> tuple[dict, dict]:
    """The x86 results, and the files both sides run."""
    import numpy as np

    import tinyvit_engine as tve
    from tinyvit_engine.bench.reference import save_checkpoint, v1_model

    bench = work / "mobilevit-xx-small.safetensors"
    if not bench.exists():
        checkpoint = save_checkpoint(v1_model("xx-small", seed=0, num_labels=1000), work / "hf")
        tve.convert(checkpoint, bench)
    paths = {
        "demo": str(ROOT / "weights" / "mobilevit-digits.safetensors"),
        "digits": sorted(str(p) for p in (ROOT / "examples").glob("digit-*.png")),
        "bench": str(bench),
    }
    demo = tve.load(paths["demo"])
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    results = {"demo": demo(demo.processor(paths["digits"])).logits, "bench": tve.load(bench)(x).logits}
    return paths, results


def compare(name: str, got, want) -> bool:
    import numpy as np

    got = np.asarray(got, np.float32)
    error = float(np.abs(got - want).max() / np.abs(want).max())
    same = bool((got.argmax(-1) == want.argmax(-1)).all())
    print(f"{name}: max |arm - x86| / max |x86| = {error:.1e}, labels {'the same' if same else 'DIFFER'}")
    return error <= RTOL and same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tinyvit-arm64"))
    p.add_argument(
        "--build-kernels",
        action="store_true",
        help="first compile the aarch64 kernels that ship, under the emulator, into kernels/_compiled/",
    )
    args = p.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    qemu = emulator()
    root = sysroot(work)
    target = site(work)
    step("setup (qemu, arm64 sysroot, aarch64 wheels)", start)
    start = time.perf_counter()
    paths, want = here(work)
    step("x86-64 results", start)
    start = time.perf_counter()
    cache = work / "numba-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {"PYTHONPATH": str(target), "NUMBA_CACHE_DIR": str(cache), "PATH": os.environ.get("PATH", "")}
    python = [qemu, "-L", root, root / "usr" / "bin" / PYTHON]
    if args.build_kernels:
        # in this process (an emulated program cannot start another): kernels/build.py's work, then its install
        from tinyvit_engine.kernels.build import install

        built = work / "aarch64-build"
        shutil.rmtree(built, ignore_errors=True)
        run(*python, "-m", "tinyvit_engine.kernels.warm", env={**env, "TINYVIT_BUILD_INTO": str(built)}, cwd=work)
        print(f"built {install(built, ROOT / 'kernels' / '_compiled')}")
        step("aarch64 kernels compiled under emulation", start)
        target = site(work)  # again: the engine's wheel now carries them
        start = time.perf_counter()
    command = [*python, "-c", ON_ARM, json.dumps(paths)]
    out = subprocess.run([str(c) for c in command], env=env, cwd=work, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return 1
    step("aarch64 under emulation", start)
    report = json.loads(out.stdout.splitlines()[-1])
    print(
        f"aarch64: platform.machine() {report['machine']}, LLVM host CPU {report['cpu']!r}; import "
        f"{report['import_s']:.1f} s, first demo run {report['first_run_s']:.1f} s, one xx-small 256x256 "
        f"inference {report['bench_s']:.1f} s; target {report['target']}, {report['compiled']} kernels compiled"
        + (f" ({report['why_compile']})" if report["why_compile"] else "")
    )
    if out.stderr.strip():
        print("aarch64 stderr:", " | ".join(out.stderr.strip().splitlines()[-5:]))
    ok = compare("demo classifier, example digits", report["demo"], want["demo"])
    ok &= compare("mobilevit-xx-small, 256x256", report["bench"], want["bench"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
