"""Build the compiled kernels that ship with the engine: `python -m tinyvit_engine.kernels.build`.

    python -m tinyvit_engine.kernels.build            # this machine's targets (x86-64-v3, and v4 on AVX-512)
    python -m tinyvit_engine.kernels.build --check    # exit 1 if a shipped target is stale (CI runs this as a test)
    python tools/arm64.py --build-kernels             # aarch64, under the emulator (about 6 minutes)

It compiles every kernel that kernels/warm.py lists (what the models run: a test holds the list to them), from
nothing, in a fresh process per portable target of this machine that its CPU can run (_target.py), and replaces
kernels/_compiled/<target>-py<XY>-numba<V>/ (or OUT/<...> with --out) with the result: Numba's cache files and a
manifest.json naming the Python, the Numba release, the target and the stamp of the sources they were built from.
Other Python or Numba versions of the same target are removed: one build per target ships. A stale target this
machine cannot build (x86-64-v4 on a CPU without AVX-512) is removed, and says so: its CPUs run the next target's
kernels until an AVX-512 machine rebuilds it. Commit the result with the kernel change that needed it.
"""

from __future__ import annotations

import argparse
import json
import os
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


def build(name: str, out: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU_", "TINYVIT_"))}
    env["TINYVIT_TARGET"] = name
    with tempfile.TemporaryDirectory() as tmp:
        env["TINYVIT_BUILD_INTO"] = tmp
        done = subprocess.run([sys.executable, "-c", REPORT], env=env, capture_output=True, text=True, check=True)
        chosen, why = json.loads(done.stdout.splitlines()[-1])
        if chosen != name:
            raise SystemExit(f"cannot build {name} here: {why}")
        subprocess.run([sys.executable, "-m", "tinyvit_engine.kernels.warm"], env=env, check=True)
        return install(Path(tmp), out)


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
        folder = build(name, args.out)
        files = list(folder.iterdir())
        print(f"{folder}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB")
    ours = {t.name for t, _ in _target.PORTABLE.get(_target.machine(), [])} - set(names)  # this CPU cannot run
    for problem in stale():
        folder = args.out / problem.split(":")[0]
        if folder.name.split("-py")[0] in ours:
            shutil.rmtree(folder)
            print(f"removed {folder.name}: stale, and this CPU cannot run it to rebuild it")
        else:
            print(f"still stale: {problem}")


if __name__ == "__main__":
    main()
