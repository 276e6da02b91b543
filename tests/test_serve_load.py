"""`tinyvit serve` under load with the fault matrix alongside (bench/serve.py, the same harness as
`python -m tinyvit_engine.bench --serve`): real clients on loopback, every good answer equal to `tinyvit classify
--json` on the same photo, every bad request its status, the server the same process throughout, its RSS flat.
No timing is asserted: the figures are the bench's."""

from pathlib import Path

from tinyvit_engine.weights import DEMO_CLASSIFIER

from tinyvit_engine.bench import serve

PHOTOS = sorted(str(p) for p in (Path(__file__).parent / "data" / "images").glob("*.*g"))


def test_load_with_the_fault_matrix_alongside():
    figures = serve.run(str(DEMO_CLASSIFIER), PHOTOS, clients_n=8, requests=25, threads=2, with_faults=True,
                        timeout=3.0)  # fmt: skip
    report = serve.report(figures, None)
    assert figures["counts"] == {"right": 200}, report  # none wrong, none lost
    assert figures["alive"], report
    assert figures["rss_after_mb"] - figures["rss_before_mb"] < 20, report
    for fault in figures["faults"]:
        assert set(fault["got"]) == {fault["want"]}, report


def test_without_batching_the_answers_are_the_same():
    figures = serve.run(
        str(DEMO_CLASSIFIER), PHOTOS[:2], clients_n=4, requests=5, threads=2, extra=("--max-batch", "1")
    )
    assert figures["counts"] == {"right": 20}, serve.report(figures, None)
