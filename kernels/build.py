"""Build the compiled kernels that ship with the engine: `python -m tinyvit_engine.kernels.build`.

    python -m tinyvit_engine.kernels.build            # this machine's targets (x86-64-v3, and v4 on AVX-512)
    python -m tinyvit_engine.kernels.build --check    # exit 1 if a shipped target is stale (CI runs this as a test)
    python tools/arm64.py --build-kernels             # aarch64, under the emulator (about 6 minutes)

It compiles every kernel that kernels/warm.py lists (what the models run: a test holds the list to them), from
nothing, in a fresh process per portable target of this machine that its CPU can run (_target.py), and replaces
kernels/_compiled/<target>-py<XY>-numba<V>/ (or OUT/<...> with --out) with the result: Numba's cache files and a
manifest.json naming the Python, the Numba release, the target and the stamp of the sources they were built from.
Other Python or Numba versions of the same target are removed: one build per target ships. A target of this
machine that its CPU cannot run (x86-64-v4 on a CPU without AVX-512) is built without running anything: the
signatures each kernel was compiled for under a target the CPU runs are compiled again for it (compiling executes
none of the code), and a fresh process then checks that every kernel loads from the result without compiling.
Commit the result with the kernel change that needed it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _target

REPORT = "import json; from tinyvit_engine.kernels import _jit; print(json.dumps([_jit.TARGET.name, _jit.WHY_COMPILE]))"


def stale() -> list[str]:
    """The shipped targets whose stamp is not the current sources' (each with what to run)."""
    out = []
    for manifest in sorted(_target.SHIPPED.glob("*/manifest.json")):
        built = json.loads(manifest.read_text())
        target = _target.Target(**built["target"])
        if built["stamp"] != _target.stamp(target):
            how = (
                "tools/arm64.py --build-kernels"
                if target.name == "aarch64"
                else "python -m tinyvit_engine.kernels.build"
            )
            out.append(f"{manifest.parent.name}: built from other sources; rebuild it ({how})")
    return out


def _fresh_env() -> dict[str, str]:
    """This environment without the CPU and engine choices a build process makes for itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU_", "TINYVIT_"))}


def build(name: str, out: Path) -> Path:
    env = _fresh_env()
    env["TINYVIT_TARGET"] = name
    with tempfile.TemporaryDirectory() as tmp:
        env["TINYVIT_BUILD_INTO"] = tmp
        done = subprocess.run([sys.executable, "-c", REPORT], env=env, capture_output=True, text=True, check=True)
        chosen, why = json.loads(done.stdout.splitlines()[-1])
        if chosen != name:
            raise SystemExit(f"cannot build {name} here: {why}")
        subprocess.run([sys.executable, "-m", "tinyvit_engine.kernels.warm"], env=env, check=True)
        return install(Path(tmp), out)


def signatures() -> dict[tuple[str, str], list]:
    """(module, kernel) -> the argument types it compiled for, once warm.py has called every op (in this process)."""
    from numba.core.dispatcher import Dispatcher

    from . import warm

    warm.compile_kernels()
    found = {}
    for name, module in list(sys.modules.items()):
        if name == __package__ or name.startswith(__package__ + "."):
            for attr, value in vars(module).items():
                if isinstance(value, Dispatcher) and value.signatures and value.py_func.__module__ == name:
                    found[(name, attr)] = list(value.signatures)
    return found


def compile_signatures(found: dict[tuple[str, str], list]) -> int:
    """Compile (or load) each kernel for its signatures without calling it; the number of kernels Numba compiled."""
    from numba.core import event

    compiled = event.RecordingListener()
    event.register("numba:compile", compiled)
    for (module, attr), sigs in found.items():
        for sig in sigs:
            getattr(importlib.import_module(module), attr).compile(sig)
    event.unregister("numba:compile", compiled)
    return len({e.data["dispatcher"] for _, e in compiled.buffer})


def cross_build(name: str, out: Path, runs: str) -> Path:
    """Build `name` on a CPU that cannot run it: compile the signatures recorded under `runs` (a target it runs)."""
    env = _fresh_env()
    with tempfile.TemporaryDirectory() as tmp:
        found = Path(tmp) / "signatures.pickle"
        code = f"from tinyvit_engine.kernels import build; build.record({str(found)!r})"
        subprocess.run([sys.executable, "-c", code], env={**env, "TINYVIT_TARGET": runs}, check=True)

        def replay_into(into: Path, step: str) -> None:
            code = f"from tinyvit_engine.kernels import build; build.replay({str(found)!r}, {name!r}, {step!r})"
            cross = {**env, "TINYVIT_TARGET": name, "TINYVIT_BUILD_INTO": str(into)}
            subprocess.run([sys.executable, "-c", code], env=cross, check=True)

        built = Path(tmp) / "built"
        replay_into(built, "compile")
        replay_into(shutil.copytree(built, Path(tmp) / "checked"), "check")  # a fresh process: all load, none compile
        return install(built, out)


def record(path: str) -> None:
    Path(path).write_bytes(pickle.dumps(signatures()))


def replay(path: str, name: str, step: str) -> None:
    from . import _jit

    if _jit.TARGET.name != name:
        raise SystemExit(f"cannot build {name} here: {_jit.WHY_COMPILE}")
    compiled = compile_signatures(pickle.loads(Path(path).read_bytes()))
    if step == "check" and compiled:
        raise SystemExit(f"{name}: {compiled} kernels compiled again from the cross build; it does not serve")


def install(built: Path, out: Path) -> Path:
    """Put a build (a TINYVIT_BUILD_INTO folder) in place as out/<tag>, replacing its target's other builds."""
    manifest = json.loads((built / "manifest.json").read_text())
    name = manifest["target"]["name"]
    tag = f"{name}-py{manifest['python'].replace('.', '')}-numba{manifest['numba']}"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{name}-py*"):
        shutil.rmtree(old)
    shutil.copytree(built, out / tag, ignore=shutil.ignore_patterns("*.tmp*", "tmp*", ".*"))
    record_files(out / tag)
    return out / tag


def record_files(folder: Path) -> None:
    """List the build's files in its manifest, so that a copy missing any (say, one that git ignored) is not used."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = sorted(f.name for f in folder.iterdir() if f.name != "manifest.json")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def describe(folder: Path, how: str = "") -> None:
    files = list(folder.iterdir())
    print(f"{folder}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB{how}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tinyvit_engine.kernels.build", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a shipped target was built from other sources")
    p.add_argument("--out", type=Path, default=_target.SHIPPED, help="where the target's folder goes")
    args = p.parse_args()
    if args.check:
        problems = stale()
        print("\n".join(problems) or "every shipped target is current")
        raise SystemExit(1 if problems else 0)
    names = [t.name for t in _target.runnable_targets()]  # (warm.py runs the kernels: the CPU must run the target)
    if not names:
        raise SystemExit(f"no portable target this machine can build ({_target.machine()})")
    for name in names:
        describe(build(name, args.out))
    for target, _ in _target.PORTABLE.get(_target.machine(), []):
        if target.name not in names:  # this CPU cannot run it: compiled, never run
            describe(cross_build(target.name, args.out, runs=names[0]), " (cross build)")
    for problem in stale():
        print(f"still stale: {problem}")


if __name__ == "__main__":
    main()
