"""Kernels you can step through: under NUMBA_DISABLE_JIT=1 (pdb, coverage) every kernel runs as its own Python code,
and small models of both families and DeepLabV3 give what the jitted kernels give, within the parity tolerance.
Also the fallback for a Numba whose internals moved: plain numba.njit, correct, and saying so once."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hf import RTOL, pixels, save_checkpoint, v1_model, v2_model

import tinyvit_engine as tve

SMALL_V1 = dict(hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 48], expand_ratio=2.0)
MODELS = {
    "mobilevit": lambda: v1_model(SMALL_V1, seed=1, num_labels=5),
    "mobilevitv2": lambda: v2_model(0.5, seed=2, num_labels=5, n_attn_blocks=[1, 1, 1]),
    "deeplabv3-mobilevit": lambda: v1_model(
        SMALL_V1, seed=3, num_labels=4, task="segmentation", aspp_out_channels=16, output_stride=16
    ),
}
SIZE = 48  # odd maps at every stage (24, 12, 6, 3, 2): the slow path covers the edge cases too

RUN = """
import json, sys, numpy as np, tinyvit_engine as tve
from tinyvit_engine.kernels import _jit
out = {"mode": _jit.MODE}
for name, path in json.loads(sys.argv[1]).items():
    x = np.load(path + "/x.npy")
    m = tve.load(path)
    np.save(path + "/stepped.npy", m(x, output_hidden_states=True).hidden_states[-1])
    np.save(path + "/logits.npy", m(x).logits)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("stepping")
    paths = {}
    for i, (name, make) in enumerate(MODELS.items()):
        path = save_checkpoint(make(), root / name)
        np.save(path / "x.npy", pixels(2, SIZE, SIZE + 5, seed=i))
        paths[name] = str(path)
    return paths


def _run(paths: dict, **env) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(paths)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def _assert_same_as_jitted(paths: dict) -> None:
    for name, path in paths.items():
        jitted = tve.load(path)
        x = np.load(f"{path}/x.npy")
        for got, want in (
            (np.load(f"{path}/logits.npy"), jitted(x).logits),
            (np.load(f"{path}/stepped.npy"), jitted(x, output_hidden_states=True).hidden_states[-1]),
        ):
            scale = float(np.abs(want).max())
            assert scale > 1e-3, f"{name}: near-zero outputs would prove nothing"
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=name)


@pytest.mark.slow
def test_models_run_on_the_kernels_python_code_under_disable_jit(checkpoints):
    info, _ = _run(checkpoints, NUMBA_DISABLE_JIT="1")
    assert info["mode"] == "python"
    _assert_same_as_jitted(checkpoints)


@pytest.mark.slow
def test_plain_njit_fallback_is_correct_and_says_so_once(checkpoints, tmp_path):
    # a fresh cache: plain kernels must not load the tuned kernels' entries (nor leave theirs in the tree)
    info, stderr = _run(checkpoints, TINYVIT_NUMBA_INTERNALS="0", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert info["mode"] == "plain"
    assert stderr.count("compile as plain numba.njit functions") == 1, stderr[-2000:]
    _assert_same_as_jitted(checkpoints)
