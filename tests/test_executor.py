"""The executor's recorded runs: a replay gives what the first run through the ops gives, for every shape it has
seen, returns arrays the caller owns, and keeps the plan's memory near the live set, not the whole graph."""

import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import tinyvit_engine as tve
from tinyvit_engine.bench import costs

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@pytest.fixture(scope="module", params=["mobilevit-digits", "deeplabv3-mobilevit-digits"])
def name(request):
    return request.param


@pytest.fixture(scope="module")
def model(name):
    return tve.load(WEIGHTS / f"{name}.safetensors")


def pixels(seed, *shape):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_replay_matches_the_recorded_run_and_a_fresh_model(name, model):
    a, b = pixels(0, 2, 3, 64, 64), pixels(1, 2, 3, 64, 64)
    first = model(a, output_hidden_states=True)  # recorded
    other_shape = model(pixels(2, 1, 3, 48, 40)).logits  # a second plan
    second = model(b, output_hidden_states=True)  # replayed, new values
    again = model(a, output_hidden_states=True)  # replayed
    np.testing.assert_array_equal(again.logits, first.logits)
    for h, h0 in zip(again.hidden_states, first.hidden_states, strict=True):
        np.testing.assert_array_equal(h, h0)
    fresh = tve.load(WEIGHTS / f"{name}.safetensors")  # its run on b goes through the ops
    np.testing.assert_array_equal(second.logits, fresh(b).logits)
    np.testing.assert_array_equal(model(pixels(2, 1, 3, 48, 40)).logits, other_shape)
    assert len(model.executor.plans) >= 2


def test_outputs_are_the_callers(model):
    x = pixels(3, 1, 3, 64, 64)
    out = model(x).logits
    expected = out.copy()
    out[...] = 0
    np.testing.assert_array_equal(model(x).logits, expected)


def test_plan_memory_is_near_the_live_set(model):
    x = pixels(4, 2, 3, 96, 96)
    model(x)
    plan = next(p[0] for key, p in model.executor.plans.items() if key[0][0] == 2 and key[0][1] == 96)
    pooled = sum(b.nbytes for b in plan.pool.roots.values())
    everything = sum(math.prod(s) * 4 for s in costs.tensor_shapes(model, x).values())
    assert pooled < everything / 3


def test_threads_share_a_model(model):
    xs = [pixels(10 + i, 1, 3, 64, 64) for i in range(4)]
    expected = [model(x).logits for x in xs]
    results = [None] * 4

    def work(i):
        for _ in range(5):
            results[i] = model(xs[i]).logits

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, e in zip(results, expected, strict=True):
        np.testing.assert_array_equal(r, e)
    # each thread ran on a plan of its own (recorded when none was idle), and at most one per core is kept
    for idle in model.executor.plans.values():
        assert 1 <= len(idle) <= (os.cpu_count() or 1)
