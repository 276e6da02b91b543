"""The benchmark: the engine against transformers on PyTorch (eager, inference mode), ONNX Runtime and OpenVINO (both
running one ONNX export of the same transformers model), on the same checkpoint, in one run.

    python -m tinyvit_engine.bench                       # every model, batch 1 and 8, 1 and 2 threads
    python -m tinyvit_engine.bench --quick               # one model, few iterations (what CI runs)
    python -m tinyvit_engine.bench --markdown bench.md   # also write the table as markdown
    python -m tinyvit_engine.bench --profile mobilevit-xx-small   # per-node time of the engine, as a roofline
    python -m tinyvit_engine.bench --job photos/ --repeat 40      # batch-job throughput vs the model alone
    python -m tinyvit_engine.bench --xnnpack             # also XNNPACK through ExecuTorch (the xnnpack extra)
    python -m tinyvit_engine.bench --serve photos/ --faults       # tinyvit serve under load, and the fault matrix

How it measures. Each contender runs in its own worker process (so one library's spinning thread pool cannot steal
the cores another is timed on), with its thread count set alike: NUMBA_NUM_THREADS / OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS / MKL_NUM_THREADS in the worker's environment, plus torch.set_num_threads, ONNX Runtime's
intra_op_num_threads and OpenVINO's INFERENCE_NUM_THREADS (with PERFORMANCE_HINT LATENCY and float32 inference
precision). The workers first compute one output each, which is validated against PyTorch; then, after warm-up,
they are timed in interleaved rounds (engine, torch, ORT, OpenVINO, engine, ...), so a busy moment of the machine
hits all of them alike, with a pause between contenders so that no thread pool is still spinning, and one untimed
run at the start of each block so that every contender is timed in its steady state. Reported: median and the 10-90%
spread of single-inference wall times, and the ratios.
Weights are real-scale random weights (tinyvit_engine/bench/reference.py), never transformers' default init, whose tiny
activations turn fp32 arithmetic into denormal arithmetic. Cold start and peak RSS run fresh `python` processes.

Needs the bench extra: torch, transformers, onnx, onnxruntime and openvino (pip install -e ".[bench]"); --no-ort and
--no-openvino leave a peer out. XNNPACK is opt-in (--xnnpack, the xnnpack extra): the model is rewritten for it
(lowering.py), exported and lowered once, and its delegation coverage printed under the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONTENDERS = ("engine", "host", "torch", "ort", "openvino", "xnnpack")  # host: the engine compiled for this CPU
PEERS = {"torch": "PyTorch", "ort": "ORT", "openvino": "OpenVINO", "xnnpack": "XNNPACK"}  # the engine against each
OPTIONAL = {"ort": "onnxruntime", "openvino": "openvino"}  # contender -> the module it needs, skipped by --no-<name>
OPT_IN = {"host": None, "xnnpack": "executorch"}  # run only when asked: --host-tuned, --xnnpack
PAUSE = 0.3  # seconds between contenders, so the last one's spinning thread pool is asleep before the next starts


@dataclass(frozen=True)
class Spec:
    family: str  # "v1" or "v2"
    arch: str  # the reference model's config name (v1) or width (v2)
    task: str
    size: int
    extra: tuple = ()


MODELS = {
    "mobilevit-xx-small": Spec("v1", "xx-small", "classification", 256),
    "mobilevit-x-small": Spec("v1", "x-small", "classification", 256),
    "mobilevit-small": Spec("v1", "small", "classification", 256),
    "mobilevitv2-0.5": Spec("v2", "0.5", "classification", 256),
    "mobilevitv2-1.0": Spec("v2", "1.0", "classification", 256),
    "deeplabv3-mobilevit-xx-small": Spec("v1", "xx-small", "segmentation", 512, (("output_stride", 16),)),
    "deeplabv3-mobilevitv2-1.0": Spec(
        "v2", "1.0", "segmentation", 512, (("output_stride", 16), ("aspp_out_channels", 512))
    ),
}


# ------------------------------------------------------------------------------------------------- model files
def reference_model(name: str):
    """The transformers model of a bench row, with real-scale random weights (seed 0)."""
    from .reference import v1_model, v2_model

    spec = MODELS[name]
    labels = 21 if spec.task == "segmentation" else 1000
    make = v1_model if spec.family == "v1" else v2_model
    arch = spec.arch if spec.family == "v1" else float(spec.arch)
    return make(arch, seed=0, num_labels=labels, task=spec.task, **dict(spec.extra))


def prepare(name: str, batch: int, workdir: Path) -> dict[str, str]:
    """Checkpoint directory, engine file and ONNX export of one model (made once, reused across runs)."""
    spec = MODELS[name]
    root = workdir / name
    paths = {
        "checkpoint": str(root / "hf"),
        "engine": str(root / "engine.safetensors"),
        "onnx": str(root / f"model-b{batch}.onnx"),
    }
    if not Path(paths["engine"]).exists() or not Path(paths["onnx"]).exists():
        import torch

        from ..formats.convert import convert
        from .reference import save_checkpoint

        model = reference_model(name)
        if not Path(paths["engine"]).exists():
            save_checkpoint(model, Path(paths["checkpoint"]))
            convert(paths["checkpoint"], paths["engine"])
        x = torch.rand(batch, 3, spec.size, spec.size)
        # the torch.export-based exporter handles v2's nn.functional.fold, which the TorchScript one cannot
        torch.onnx.export(
            model,
            (x,),
            paths["onnx"],
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamo=True,
            verbose=False,
        )
    return paths


def xnnpack_program(name: str, batch: int, workdir: Path) -> dict:
    """The model lowered to XNNPACK through ExecuTorch, as an edge user would ship it: its modules that XNNPACK
    leaves out rewritten (lowering.py), torch.export, to_edge_transform_and_lower with XnnpackPartitioner, saved as
    a .pte (made once, reused). Returns its path and the delegation coverage: the subgraphs XNNPACK runs, and the
    ops left to ExecuTorch's portable kernels."""
    root = workdir / name
    pte, coverage = root / f"model-b{batch}.pte", root / f"model-b{batch}.pte.json"
    if not pte.exists() or not coverage.exists():
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from .lowering import for_xnnpack
        from .reference import logits_only

        size = MODELS[name].size
        model = for_xnnpack(reference_model(name)) or logits_only(reference_model(name))
        exported = torch.export.export(model, (torch.rand(batch, 3, size, size),))
        lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        calls = [n for n in lowered.exported_program().graph_module.graph.nodes if n.op == "call_function"]
        calls = [n for n in calls if "getitem" not in str(n.target)]
        delegated = [n for n in calls if "executorch_call_delegate" in str(n.target)]
        # "<EdgeOpOverload: aten.mean.dim>: schema = ..." -> "aten.mean.dim"
        outside = sorted(str(n.target).split(">")[0].removeprefix("<EdgeOpOverload: ") for n in calls
                         if n not in delegated)  # fmt: skip
        pte.write_bytes(lowered.to_executorch().buffer)
        coverage.write_text(json.dumps({"subgraphs": len(delegated), "outside": outside}))
    return {"pte": str(pte), **json.loads(coverage.read_text())}


def pixels(name: str, batch: int) -> np.ndarray:
    size = MODELS[name].size
    return np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------ workers
def worker(kind: str) -> None:
    """A timing worker: reads JSON commands on stdin, answers one JSON line each."""
    threads = int(os.environ["TINYVIT_BENCH_THREADS"])
    run = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "load":
            x = pixels(cmd["model"], cmd["batch"])
            run = _runner(kind, cmd["paths"], x, threads)
            np.save(cmd["output"], run())
            reply = {"ok": True}
        elif cmd["cmd"] == "time":
            run()  # untimed: wakes this contender's thread pool after the pause
            times = []
            for _ in range(cmd["n"]):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            reply = {"times": times}
        else:
            return
        print(json.dumps(reply), flush=True)


def _runner(kind: str, paths: dict[str, str], x: np.ndarray, threads: int):
    """A function computing the logits of `x`, set up in this worker process."""
    runners = {"engine": _engine, "host": _engine, "torch": _torch, "ort": _ort, "openvino": _openvino}
    runners["xnnpack"] = _xnnpack
    return runners[kind](paths, x, threads)


def _engine(paths: dict[str, str], x: np.ndarray, threads: int):
    from ..model import load

    model = load(paths["engine"])
    return lambda: model(x).logits


def _torch(paths: dict[str, str], x: np.ndarray, threads: int):
    import torch
    import transformers

    torch.set_num_threads(threads)
    config = transformers.AutoConfig.from_pretrained(paths["checkpoint"])
    cls = getattr(transformers, config.architectures[0])
    model = cls.from_pretrained(paths["checkpoint"]).eval()
    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return model(xt).logits.numpy()

    return run


def _ort(paths: dict[str, str], x: np.ndarray, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(paths["onnx"], options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"pixel_values": x})[0]


def _openvino(paths: dict[str, str], x: np.ndarray, threads: int):
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    config = {
        props.inference_num_threads: threads,  # "INFERENCE_NUM_THREADS"
        hints.performance_mode: hints.PerformanceMode.LATENCY,  # "PERFORMANCE_HINT": one stream, one request
        # "INFERENCE_PRECISION_HINT": on CPUs with bf16 (AVX512_BF16, AMX) OpenVINO would otherwise run in bf16
        hints.inference_precision: ov.Type.f32,
    }
    compiled = core.compile_model(core.read_model(paths["onnx"]), "CPU", config)
    request = compiled.create_infer_request()
    # share_inputs: read x in place, as ORT does, instead of copying it into the request on every call
    return lambda: request.infer({"pixel_values": x}, share_inputs=True)[0]


def _xnnpack(paths: dict[str, str], x: np.ndarray, threads: int):
    import torch
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pthreadpool, which ExecuTorch sizes to the cores
    program = portable_lib._load_for_executorch(paths["pte"])
    xt = torch.from_numpy(x)
    return lambda: program.forward([xt])[0].numpy()


class Worker:
    def __init__(self, kind: str, threads: int) -> None:
        env = {**os.environ, "TINYVIT_BENCH_THREADS": str(threads)}
        if kind == "host":  # the engine's kernels compiled for this CPU, not the shipped portable ones
            env["TINYVIT_TARGET"] = "host"
        for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tinyvit_engine.bench", "--worker", kind],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark worker died on {cmd['cmd']}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


# --------------------------------------------------------------------------------------------------- measuring
def measure(
    name: str,
    batch: int,
    threads: int,
    workdir: Path,
    warmup: int,
    rounds: int,
    per_round: int,
    contenders: tuple[str, ...],
) -> dict:
    """Validate, then time every contender in interleaved rounds."""
    paths = prepare(name, batch, workdir)
    coverage = None
    if "xnnpack" in contenders:
        program = xnnpack_program(name, batch, workdir)
        paths = {**paths, "pte": program["pte"]}
        coverage = {k: program[k] for k in ("subgraphs", "outside")}
    workers = {k: Worker(k, threads) for k in contenders}
    try:
        outputs = {}
        for k, w in list(workers.items()):
            out = workdir / f"out-{k}.npy"
            try:
                w.ask(cmd="load", model=name, batch=batch, paths=paths, output=str(out))
            except RuntimeError:
                if k in ("engine", "host", "torch"):
                    raise
                print(f"{name}: {k} failed to load or run this model; left out of this row", file=sys.stderr)
                w.close()
                del workers[k]
                continue
            outputs[k] = np.load(out)
        ref = outputs["torch"]
        errors = {k: float(np.abs(v - ref).max() / np.abs(ref).max()) for k, v in outputs.items() if k != "torch"}
        for k, err in errors.items():
            if err < 2e-4:
                continue
            if k in ("engine", "host"):
                raise RuntimeError(
                    f"{name}: the engine differs from PyTorch (max relative error {err:.2e}); not timing"
                )
            print(
                f"{name}: {k} differs from PyTorch (max relative error {err:.2e}); left out of this row",
                file=sys.stderr,
            )
            workers.pop(k).close()
        for w in workers.values():
            w.ask(cmd="time", n=warmup)
        times = {k: [] for k in workers}
        for _ in range(rounds):
            for k, w in workers.items():
                times[k] += w.ask(cmd="time", n=per_round)["times"]
                time.sleep(PAUSE)
    finally:
        for w in workers.values():
            w.close()
    result = {"model": name, "batch": batch, "threads": threads, "errors": errors}
    if coverage is not None:
        result["xnnpack_coverage"] = coverage
    for k, ts in times.items():
        q = np.quantile(ts, [0.1, 0.5, 0.9]) * 1e3
        result[k] = {"median": float(q[1]), "p10": float(q[0]), "p90": float(q[2])}
    return result


def cold_start(engine_file: str, image: str) -> dict:
    """import + load + first classification in a fresh process: with an empty cache (the shipped kernels copied in),
    then a warm one; and with an empty cache compiling for this CPU (TINYVIT_TARGET=host), as where none ship."""
    code = f"import tinyvit_engine as tve; m = tve.load({engine_file!r}); m.classify({image!r})"
    result = {}
    for key, env in (("empty_cache_s", {}), ("warm_cache_s", {}), ("compiling_s", {"TINYVIT_TARGET": "host"})):
        if key != "warm_cache_s":
            cache = tempfile.mkdtemp()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "TINYVIT_CACHE_DIR": cache, **env}, check=True)
        result[key] = time.perf_counter() - start
    return result


def peak_rss(engine_file: str, image: str) -> float:
    """Peak resident memory (MB) of `tinyvit classify` on one image, in a process that runs nothing else (with a warm
    Numba cache: compiling takes LLVM's memory too, about 45 MB more)."""
    tinyvit = str(Path(sys.executable).with_name("tinyvit"))
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [tinyvit, "classify", image, "--model", engine_file]
    subprocess.run(command, check=True, capture_output=True)  # once first, so Numba's cache is warm, as in use
    out = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def profile(name: str, workdir: Path, batch: int, threads: int | None = None, runs: int = 20) -> None:
    """Per-node engine time for one model, as a roofline: grouped by op and the slowest nodes, each with its FLOP
    and byte rates against this machine's peaks (bench/costs.py), on `threads` of Numba's pool (None: all of it)."""
    import numba

    from ..model import load
    from . import costs

    if threads is not None:
        numba.set_num_threads(threads)  # before the peaks, which are scaled by it
    peak = costs.measure_peak()  # first, while no thread pool of the model spins beside it
    print(peak.describe(), flush=True)
    model = load(prepare(name, batch, workdir)["engine"])
    x = pixels(name, batch)
    graph = model.executor.graph  # fused, as it runs
    node_costs = costs.graph_costs(graph, costs.tensor_shapes(model, x))
    for _ in range(3):
        model(x)
    seconds: dict[str, float] = {}  # each node's fastest run: this machine's speed wanders between runs
    for _ in range(runs):
        timings: dict[str, float] = {}
        model(x, timings=timings)
        for node, t in timings.items():
            seconds[node] = min(seconds.get(node, t), t)
    nodes = {n.name: n for n in graph.nodes}
    by_kind: dict[str, tuple[float, costs.Cost, float]] = {}  # time, work and floor of each kind
    for node, t in seconds.items():
        kind = costs.kind(nodes[node])
        spent, cost, least = by_kind.get(kind, (0.0, costs.Cost(0, 0), 0.0))
        by_kind[kind] = (spent + t, cost + node_costs[node], least + costs.floor(node_costs[node], peak))
    total = sum(seconds.values())
    work = sum(node_costs.values(), costs.Cost(0, 0))
    least = sum(costs.floor(c, peak) for c in node_costs.values())
    print(
        f"{name}, batch {batch}: {total * 1e3:.2f} ms (the sum of each node's fastest of {runs} runs) in "
        f"{len(nodes)} nodes, {work.flops / 1e9:.3f} GFLOP, {work.bytes / 1e6:.1f} MB moved (at least); "
        f"percentages of the scaled peaks"
    )
    print(
        f"floor: {least * 1e3:.2f} ms (each node at its roof; {work.flops / peak.total_flops * 1e3:.2f} ms of it "
        f"the FLOPs at the FMA peak); the engine is at {total / least:.2f}x the floor"
    )
    print(costs.header("op kind", 20))
    for kind, (t, cost, kind_floor) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        print(costs.row(kind, t, cost, peak, total, 20, kind_floor))
    print(costs.row("all", total, work, peak, total, 20, least))
    slowest = sorted(seconds.items(), key=lambda kv: -kv[1])[:15]
    width = max(len(node) for node, _ in slowest)
    print(costs.header("slowest nodes", width))
    for node, t in slowest:
        print(costs.row(node, t, node_costs[node], peak, total, width))


def job(paths: list[str], repeat: int, threads: list[int], rounds: int, workdir: Path) -> None:
    from ..jobs import expand
    from . import job as jobbench

    files = [str(f) for f in expand(paths)] * repeat
    engine_file = prepare("mobilevit-xx-small", 8, workdir)["engine"]
    print(machine(), flush=True)
    print(f"mobilevit-xx-small, {len(files)} images, median of {rounds} interleaved rounds", flush=True)
    rows = []
    for t in threads:
        rows.append(jobbench.measure(engine_file, files, t, rounds))
        print(jobbench.table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(jobbench.table(rows))


def serve_load(paths: list[str], clients: int, requests: int, threads: int, faults: bool, workdir: Path) -> None:
    """`tinyvit serve` on mobilevit-xx-small under load (bench/serve.py), against the batch job on the same photos
    and threads, measured before and after the load (this machine's speed drifts)."""
    from ..jobs import expand
    from . import job as jobbench
    from . import serve

    photos = [str(f) for f in expand(paths)]
    engine_file = prepare("mobilevit-xx-small", 8, workdir)["engine"]
    print(machine(), flush=True)
    print(f"mobilevit-xx-small, {len(photos)} photos", flush=True)
    files = photos * max(1, 200 // len(photos))
    before = jobbench.measure(engine_file, files, threads, 3)["job"]
    print(f"batch job: {before:.1f} images/s on {threads} threads", flush=True)
    figures = serve.run(engine_file, photos, clients, requests, threads, faults)
    after = jobbench.measure(engine_file, files, threads, 3)["job"]
    print(f"batch job: {after:.1f} images/s on {threads} threads", flush=True)
    job = {"threads": threads, "job": (before + after) / 2, "before": before, "after": after}
    print(serve.report(figures, job))
    out = workdir / "serve.json"
    out.write_text(json.dumps({"machine": machine(), "job": job, **figures}, indent=1, default=str))
    print(f"(the figures in {out})")


# ------------------------------------------------------------------------------------------------------ report
def machine() -> str:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for mod in ("numpy", "numba", "torch", "transformers", "onnxruntime", "openvino"):
        try:
            # OpenVINO's version carries its build: "2026.4.1-22982-e213a147257-releases/2026/4"
            versions.append(f"{mod} {__import__(mod).__version__.split('-')[0]}")
        except ImportError:
            versions.append(f"{mod} missing")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; " + ", ".join(versions)


def coverage_lines(results: list[dict]) -> list[str]:
    """What XNNPACK ran of each model (as exported from transformers) and what ExecuTorch's portable kernels did."""
    lines, seen = [], set()
    for r in results:
        if "xnnpack_coverage" not in r or (r["model"], r["batch"]) in seen:
            continue
        seen.add((r["model"], r["batch"]))
        c = r["xnnpack_coverage"]
        ops = Counter(c["outside"])
        outside = ", ".join(f"{op.removeprefix('aten.')} x{n}" for op, n in ops.most_common()) or "none"
        lines.append(
            f"XNNPACK delegation, {r['model']} batch {r['batch']}: {c['subgraphs']} delegated subgraphs; "
            f"{len(c['outside'])} ops outside them ({outside})"
        )
    return lines


def table(results: list[dict]) -> str:
    """Markdown rows: median (10-90% spread) ms of every contender, then the engine's time over each peer's (and
    over the host-tuned engine's and XNNPACK's, when they ran)."""
    peers = {"host": "host-tuned", **PEERS}
    peers = {k: v for k, v in peers.items() if k not in OPT_IN or any(k in r for r in results)}  # opt-in: if they ran
    shown = [k for k in CONTENDERS if k == "engine" or k in peers]
    columns = ["model", "batch", "threads", "engine ms"]
    columns += [f"{label} ms" for label in peers.values()] + [f"engine/{label}" for label in peers.values()]
    rows = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in results:
        e = r["engine"]["median"]
        cell = {k: f"{r[k]['median']:.1f} ({r[k]['p10']:.1f}-{r[k]['p90']:.1f})" if k in r else "-" for k in shown}
        ratio = {k: f"{e / r[k]['median']:.2f}" if k in r else "-" for k in peers}
        cells = [r["model"], r["batch"], r["threads"], *cell.values(), *ratio.values()]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tinyvit_engine.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="+", type=int, help="default: 1 2 (--profile: one value; default all cores)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="xx-small, batch 1, 2 threads, few iterations")
    p.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO")
    p.add_argument(
        "--host-tuned",
        action="store_true",
        help="also time the engine compiled for this CPU (TINYVIT_TARGET=host) against the shipped kernels",
    )
    p.add_argument(
        "--xnnpack",
        action="store_true",
        help="also time XNNPACK through ExecuTorch (pip install -e '.[xnnpack]'); its delegation coverage is printed",
    )
    p.add_argument("--markdown", help="also write the results table to this file")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tinyvit-bench"))
    p.add_argument("--profile", metavar="MODEL", choices=list(MODELS), help="per-node roofline of one model")
    p.add_argument("--job", nargs="+", metavar="PATH", help="batch-job throughput on these photos (bench/job.py)")
    p.add_argument("--repeat", type=int, default=1, help="with --job: take the photos this many times")
    p.add_argument(
        "--serve", nargs="+", metavar="PATH", help="tinyvit serve under load on these photos (bench/serve.py)"
    )
    p.add_argument("--clients", type=int, default=8, help="with --serve: concurrent clients")
    p.add_argument("--requests", type=int, default=200, help="with --serve: requests per client")
    p.add_argument("--faults", action="store_true", help="with --serve: the fault matrix alongside the load")
    p.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    given, args.threads = args.threads, args.threads or [1, 2]
    if args.profile:
        import numba

        most = numba.config.NUMBA_NUM_THREADS
        if given is not None and (len(given) != 1 or not 1 <= given[0] <= most):
            p.error(f"--profile takes one --threads value, from 1 to {most} (NUMBA_NUM_THREADS); got {given}")
        return profile(args.profile, workdir, args.batch[0], given[0] if given else None)
    if args.job:
        return job(args.job, args.repeat, args.threads, args.rounds, workdir)
    if args.serve:
        return serve_load(args.serve, args.clients, args.requests, max(args.threads), args.faults, workdir)
    if args.quick:
        args.models, args.batch, args.threads = ["mobilevit-xx-small"], [1], [2]
        args.rounds, args.per_round, args.warmup = 2, 3, 2
    skipped = {k for k in OPTIONAL if getattr(args, f"no_{k}")}
    skipped |= {k for k, wanted in (("host", args.host_tuned), ("xnnpack", args.xnnpack)) if not wanted}
    contenders = tuple(k for k in CONTENDERS if k not in skipped)
    for k in contenders:
        module = OPTIONAL.get(k) or OPT_IN.get(k)
        if module:
            try:
                __import__(module)
            except ImportError as e:
                extra, instead = ("xnnpack", "leave out --xnnpack") if k == "xnnpack" else ("bench", f"pass --no-{k}")
                p.error(f"{PEERS[k]} cannot be imported ({e}): pip install -e '.[{extra}]', or {instead}")
    print(machine(), flush=True)
    results = []
    for name in args.models:
        for batch in args.batch:
            for threads in args.threads:
                r = measure(name, batch, threads, workdir, args.warmup, args.rounds, args.per_round, contenders)
                results.append(r)
                print(table([r]).splitlines()[-1], *coverage_lines([r]), sep="\n", flush=True)
    engine_file = prepare("mobilevit-xx-small", 1, workdir)["engine"]
    image = str(workdir / "photo.png")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image)
    cold = cold_start(engine_file, image)
    rss = peak_rss(engine_file, image)
    report = "\n".join(
        [
            f"Machine: {machine()}",
            "Threads: NUMBA/OMP/OPENBLAS/MKL_NUM_THREADS, torch.set_num_threads, ORT intra_op_num_threads, "
            "OpenVINO INFERENCE_NUM_THREADS and ExecuTorch's _unsafe_reset_threadpool (XNNPACK), per worker.",
            f"Median (10-90% spread) of single-inference wall times over {args.rounds * args.per_round} runs per "
            f"contender after {args.warmup} warm-up runs, interleaved in {args.rounds} rounds.",
            "",
            table(results),
            *coverage_lines(results),
            "",
            f"Cold start of mobilevit-xx-small (fresh process: import + load + first classify of a 640x480 image): "
            f"{cold['empty_cache_s']:.2f} s with an empty cache (the shipped kernels), {cold['warm_cache_s']:.2f} s "
            f"with a warm one, {cold['compiling_s']:.2f} s compiling for this CPU (TINYVIT_TARGET=host).",
            f"Peak RSS of `tinyvit classify` on mobilevit-xx-small: {rss:.0f} MB.",
        ]
    )
    print()
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
