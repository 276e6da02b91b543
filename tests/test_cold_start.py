"""Cold start where the kernels must compile (the host target, TINYVIT_TARGET=host, as on a CPU the shipped kernels
do not serve: tests/test_shipped.py): the first run compiles them once, says so, and uses a second core for it
(through kernels/warm.py); what warm.py compiles is exactly what the models run (so the shipped kernels, which
kernels/build.py makes with warm.py, cover the models). Each test starts from an empty cache in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hf import save_checkpoint, v2_model

pytestmark = pytest.mark.slow  # (the quick lane, -m "not slow", leaves these out)

ROOT = Path(__file__).resolve().parent.parent
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))
MESSAGE = "compiling the kernels for this CPU"


def run(command, cache, **kwargs):
    env = {**os.environ, "TINYVIT_CACHE_DIR": str(cache), "TINYVIT_TARGET": "host"}
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True, **kwargs)


def test_first_run_says_it_compiles_and_uses_a_second_core(tmp_path):
    command = [TINYVIT, "classify", "examples/digit-3.png"]
    first = run(command, tmp_path)
    assert first.stderr.count(MESSAGE) == 1
    if len(os.sched_getaffinity(0)) >= 2:
        # the helper goes backwards through warm.py's list, so it compiles an op this classifier never runs
        assert list(tmp_path.rglob("resize._resize_bilinear-*.nbi")), "no sign of the compiling helper"
    second = run(command, tmp_path)
    assert MESSAGE not in second.stderr
    assert second.stdout == first.stdout
    helpers = [p for p in Path("/proc").glob("[0-9]*") if b"kernels.warm" in _cmdline(p)]
    assert not helpers, "the compiling helper outlived the run"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


COMPILED_BY_MODELS = """
import json, sys
import numpy as np
from numba.core import event
import tinyvit_engine as tve
from tinyvit_engine.kernels import warm

warm.compile_kernels()
compiled = event.RecordingListener()
event.register("numba:compile", compiled)
image = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
for path in sys.argv[1:]:
    model = tve.load(path)
    model.processor(image)  # the fast path of the processor: kernels/preprocess.py
    model(np.random.default_rng(0).random((2, 3, 72, 88), dtype=np.float32))
print(json.dumps(sorted({e.data["dispatcher"].py_func.__qualname__ for _, e in compiled.buffer})))
"""


def test_warm_compiles_what_the_models_run(tmp_path):
    v2 = tmp_path / "v2"
    save_checkpoint(v2_model(0.5, seed=0), v2)  # linear attention and group norm, which the demo models lack
    models = [
        ROOT / "weights/mobilevit-digits.safetensors",
        ROOT / "weights/deeplabv3-mobilevit-digits.safetensors",
        v2,
    ]
    out = run([sys.executable, "-c", COMPILED_BY_MODELS, *map(str, models)], tmp_path / "cache")
    assert json.loads(out.stdout.splitlines()[-1]) == []
