"""Compiled kernels that ship (kernels/_target.py, kernels/build.py): current with the sources; a fresh process with
an empty cache compiles nothing; where they cannot serve (another Numba or Python, a CPU without AVX2 or FMA, the
host asked for, Numba already busy), the engine compiles for the host, says why once, and never loads them; the
8-row (AVX-512) tiles pass the kernel tests on any x86-64 CPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hf import save_checkpoint, v2_model
from tinyvit_engine.kernels import _jit, _target, build
from tinyvit_engine.weights import DEMO_CLASSIFIER, DEMO_SEGMENTER

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = "compiling the kernels for this CPU"
RUN = """
import json, sys
from numba.core import event
compiled = event.RecordingListener()
event.register("numba:compile", compiled)
import numpy as np, tinyvit_engine as tve
from tinyvit_engine.kernels import _jit, _gemm
for path in sys.argv[1:]:
    model = tve.load(path)
    model.processor(np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8))  # preprocess kernel
    model(np.random.default_rng(0).random((2, 3, 72, 88), dtype=np.float32))
names = sorted({e.data["dispatcher"].py_func.__qualname__ for _, e in compiled.buffer})
report = {"target": _jit.TARGET.name, "why": _jit.WHY_COMPILE, "cache": str(_jit.CACHE), "rows": _gemm.ROWS}
print(json.dumps({**report, "compiled": names}))
"""


def run(models, cache: Path, prelude: str = "", cwd: Path = ROOT, **env) -> tuple[dict, str]:
    environment = {**os.environ, "TINYVIT_CACHE_DIR": str(cache), **env}
    for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "TINYVIT_TARGET", "TINYVIT_TILE_ROWS"):
        if k not in env:
            environment.pop(k, None)
    command = [sys.executable, "-c", prelude + RUN, *map(str, models)]
    done = subprocess.run(command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    # linear attention and group norm, which the demo models lack
    return save_checkpoint(v2_model(0.5, seed=0), tmp_path_factory.mktemp("v2"))


def test_the_shipped_kernels_are_current_and_cover_this_machine():
    assert build.stale() == [], "\n".join(build.stale())
    assert _jit.TARGET.name in ("x86-64-v3", "x86-64-v4"), "CI's machines are x86-64 with AVX2 and FMA"
    assert _jit.WHY_COMPILE == "" and _target.shipped(_jit.TARGET) is not None, _jit.WHY_COMPILE
    shipped = {p.parent.name for p in _target.SHIPPED.glob("*/manifest.json")}
    assert {f"x86-64-v3-py311-numba{_target.numba.__version__}", "aarch64-py311-numba0.68.1"} <= shipped


def test_the_tile_rows_follow_the_target():
    assert _target.tile_rows(_target.Target("x86-64-v3", "x86-64-v3", "")) == 3
    assert _target.tile_rows(_target.Target("x86-64-v4", "x86-64-v4", _target.WIDE)) == 8
    assert _target.tile_rows(_target.Target("aarch64", "generic", "")) == 3
    assert _target.tile_rows(_target.Target("host", "znver3", "+avx2,+fma,-avx512f")) == 3
    # AVX-512 at 256 bits (Numba's default for an Intel host) would spill 8 rows: 3
    assert _target.tile_rows(_target.Target("host", "sapphirerapids", "+avx2,+fma,+avx512f")) == 3
    assert _target.tile_rows(_target.Target("host", "sapphirerapids", f"+avx2,+fma,+avx512f,{_target.WIDE}")) == 8
    # the one-panel tile: 4 rows on AVX2 (6 spilled its sums there), 6 on ARM, 8 on AVX-512
    assert [_target.tall_rows(t) for t, _ in _target.PORTABLE["x86_64"]] == [8, 4]
    assert _target.tall_rows(_target.Target("aarch64", "generic", "")) == 6


@pytest.mark.parametrize("target", ["portable", "x86-64-v3"])
def test_a_fresh_cache_compiles_nothing(tmp_path, v2, target):
    """The best target this CPU runs, and x86-64-v3 (what an AVX2 CPU runs), each from an empty cache."""
    report, stderr = run([DEMO_CLASSIFIER, DEMO_SEGMENTER, v2], tmp_path, TINYVIT_TARGET=target)
    assert report["compiled"] == [] and report["why"] == "" and MESSAGE not in stderr
    name = _jit.TARGET.name if target == "portable" else target
    assert report["target"] == name and report["rows"] == (8 if name == "x86-64-v4" else 3)
    cache = Path(report["cache"])
    assert cache.parent == tmp_path and cache.name.startswith(f"{name}-py311-")
    shipped = _target.SHIPPED / f"{name}-py311-numba{_target.numba.__version__}"
    assert len(list(cache.glob("*.nbi"))) == len(list(shipped.glob("*.nbi")))


FAKES = {
    "another Numba": (
        "import numba\nnumba.__version__ = '0.67.0'\n",
        {},
        "for Python 3.11 with Numba 0.68.1, this is Python 3.11 with Numba 0.67.0",
    ),
    "no AVX2 or FMA": (
        "import llvmlite.binding as llvm\nreal = llvm.get_host_cpu_features\n"
        "def fake():\n    f = real()\n    f['avx2'] = f['fma'] = False\n    return f\n"
        "llvm.get_host_cpu_features = fake\n",
        {},
        "this CPU lacks AVX2, FMA",
    ),
    "host asked for": ("", {"TINYVIT_TARGET": "host"}, "TINYVIT_TARGET=host"),
    "Numba busy": ("import numba\nnumba.njit(lambda x: x + 1)(1)\n", {}, "Numba compiled for this CPU"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FAKES)
def test_where_the_shipped_kernels_cannot_serve_the_host_compiles_and_says_why(tmp_path, case):
    prelude, env, why = FAKES[case]
    report, stderr = run([DEMO_CLASSIFIER], tmp_path, prelude, **env)
    assert why in report["why"], report
    assert report["compiled"], "nothing compiled: the shipped kernels were used where they cannot serve"
    assert stderr.count(MESSAGE) == 1 and why in stderr
    shipped = _target.SHIPPED / f"{_jit.TARGET.name}-py311-numba{_target.numba.__version__}"
    if case != "another Numba":  # (another Numba compiles the portable target: its own, under its own tag)
        assert report["target"] == "host" and Path(report["cache"]).name.startswith("host-")
        # never the shipped code: a host cache holds only what this process compiled
        cache = Path(report["cache"])
        assert json.loads((cache / "manifest.json").read_text())["shipped"] is False
        for f in cache.glob("*.nbc"):
            assert not (shipped / f.name).exists() or (shipped / f.name).read_bytes() != f.read_bytes(), f.name
    else:
        assert Path(report["cache"]).name.startswith(f"{_jit.TARGET.name}-py311-numba0.67.0-")


@pytest.mark.slow
def test_another_python_compiles_and_says_why(tmp_path):
    """The shipped files renamed as if built for Python 3.12, in a copy of the checkout, run from its root."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info"))
    for folder in (clone / "kernels" / "_compiled").glob("*-py311-*"):
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "python": "3.12"}))
        folder.rename(folder.with_name(folder.name.replace("-py311-", "-py312-")))
    report, stderr = run([DEMO_CLASSIFIER], tmp_path / "cache", cwd=clone)
    assert "for Python 3.12 with Numba" in report["why"] and report["compiled"]
    assert stderr.count(MESSAGE) == 1


@pytest.mark.slow
def test_the_eight_row_tiles_pass_the_kernel_tests_on_any_x86_64(tmp_path):
    """The AVX-512 choice of _gemm (8-row product tiles, and every block size derived from ROWS) is valid AVX2 code:
    the kernel tests run it here against the references, whatever the CPU."""
    env = {**os.environ, "TINYVIT_TILE_ROWS": "8", "TINYVIT_CACHE_DIR": str(tmp_path)}
    rows = subprocess.run(
        [sys.executable, "-c", "from tinyvit_engine.kernels import _gemm; print(_gemm.ROWS)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert rows.stdout.strip() == "8", rows.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout


@pytest.mark.slow
def test_a_target_this_cpu_cannot_run_builds_without_running(tmp_path):
    """x86-64-v4 builds on any x86-64 CPU (kernels/build.py's cross build: the signatures recorded under x86-64-v3,
    compiled again for v4, nothing run), and a fresh process loads every kernel of it without compiling (the build's
    own check step, which fails the build otherwise); the result has the files of the v4 kernels that ship."""
    folder = build.cross_build("x86-64-v4", tmp_path, runs="x86-64-v3")
    made = json.loads((folder / "manifest.json").read_text())
    shipped = json.loads((_target.SHIPPED / folder.name / "manifest.json").read_text())
    assert made["target"]["name"] == "x86-64-v4" and made["tile_rows"] == 8 and made["stamp"] == shipped["stamp"]
    assert made["files"] == shipped["files"]


def test_a_child_asking_for_the_host_drops_the_portable_choice_it_inherited(tmp_path):
    """A process the engine starts inherits NUMBA_CPU_NAME=x86-64-v3 from it; TINYVIT_TARGET=host must still give
    host code (else 8-row AVX-512 tiles would be compiled for AVX2's 16 registers): Numba's default for the host, or
    on an AVX-512 CPU the host with 512-bit vectors."""
    code = "import numba; from tinyvit_engine.kernels import _jit; print(_jit.TARGET.name, numba.config.CPU_NAME)"
    env = {**os.environ, "NUMBA_CPU_NAME": "x86-64-v3", "NUMBA_CPU_FEATURES": "", "TINYVIT_TARGET": "host"}
    env["TINYVIT_CACHE_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    host = _target.host(wide=True)
    expected = host.cpu if _target.WIDE in host.features.split(",") else "None"
    assert done.stdout.split() == ["host", expected], done.stderr[-2000:]


def test_a_bad_setting_is_named_and_the_default_used(tmp_path):
    env = {**os.environ, "TINYVIT_TARGET": "avx9000", "TINYVIT_TILE_ROWS": "5", "TINYVIT_CACHE_DIR": str(tmp_path)}
    code = "from tinyvit_engine.kernels import _jit, _gemm; print(_jit.TARGET.name, _gemm.ROWS)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [_jit.TARGET.name, str(_target.tile_rows(_jit.TARGET))]
    assert "TINYVIT_TARGET='avx9000' is none of portable, host" in done.stderr
    assert "TINYVIT_TILE_ROWS='5' is neither 3 nor 8" in done.stderr
