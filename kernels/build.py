"""Build the compiled kernels that ship with the engine: `python -m tinyvit_engine.kernels.build`.

    python -m tinyvit_engine.kernels.build            # this machine's portable target (x86-64-v3 on x86-64)
    python -m tinyvit_engine.kernels.build --check    # exit 1 if a shipped target is stale (CI runs this as a test)
    python tools/arm64.py --build-kernels             # aarch64, under the emulator (about 6 minutes)

It compiles every kernel that kernels/warm.py lists (what the models run: a test holds the list to them), from
nothing, in a fresh process, for the portable target (_target.py), and replaces kernels/_compiled/<target>-py<XY>-
numba<V>/ (or OUT/<...> with --out) with the result: Numba's cache files and a manifest.json naming the Python, the
Numba release, the target and the stamp of the sources they were built from. Other Python or Numba versions of the
same target are removed: one build per target ships. Commit the result with the kernel change that needed it.
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
            out.append(f"{manifest.parent.name}: built from other sources; rebuild it ({__doc__.splitlines()[2]})")
    return out


def build(out: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU_", "TINYVIT_"))}
    with tempfile.TemporaryDirectory() as tmp:
        env["TINYVIT_BUILD_INTO"] = tmp
        done = subprocess.run([sys.executable, "-c", REPORT], env=env, capture_output=True, text=True, check=True)
        name, why = json.loads(done.stdout.splitlines()[-1])
        if name == "host":
            raise SystemExit(f"no portable target to build on this machine: {why}")
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
    shutil.copytree(built, out / tag, ignore=shutil.ignore_patterns("*.tmp*", "tmp*"))
    return out / tag


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tinyvit_engine.kernels.build", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a shipped target was built from other sources")
    p.add_argument("--out", type=Path, default=_target.SHIPPED, help="where the target's folder goes")
    args = p.parse_args()
    if args.check:
        problems = stale()
        print("\n".join(problems) or "every shipped target is current")
        raise SystemExit(1 if problems else 0)
    folder = build(args.out)
    files = list(folder.iterdir())
    print(f"{folder}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
