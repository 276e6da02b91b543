"""`tinyvit serve` under load (`python -m tinyvit_engine.bench --serve PHOTOS... [--clients 8] [--requests 200]
[--faults]`): real HTTP clients on loopback against a real server process. Every answer is held to `tinyvit classify
--json` on the same file; reported are the latencies (p50, p99), the throughput against the batch job's end-to-end
images/s on the same threads, the server's RSS before and after, and, with --faults, what each bad request of the
fault matrix got while the good ones kept coming.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

KEY = "bench-key"
KINDS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class ServerProcess:
    """`python -m tinyvit_engine --threads T serve MODEL` on a free loopback port, ready once /health says 200."""

    def __init__(self, model: str, threads: int, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        command = [sys.executable, "-m", "tinyvit_engine", "--threads", str(threads), "serve", model]
        command += ["--port", str(self.port), "--api-key", KEY, *extra]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server was not ready within 300 s")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body, headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def cli_answers(model: str, files: list[str], top_k: int) -> dict[str, list]:
    """What `tinyvit classify --json` says of each file: the answers a server must equal."""
    command = [sys.executable, "-m", "tinyvit_engine", "classify", "--json", "--top-k", str(top_k), "--model", model]
    done = subprocess.run([*command, *files], capture_output=True, text=True, check=True)
    return {r["image"]: r["labels"] for r in map(json.loads, done.stdout.splitlines())}


def clients(port: int, work: list[list[tuple[bytes, str, list]]], top_k: int) -> dict:
    """Each list of (body, content type, expected answer) sent in order by one client on a keep-alive connection,
    all clients at once. Returns latencies, counts of right, wrong and lost answers, and the wall time."""
    latencies: list[float] = []
    counts: Counter = Counter()
    lock = threading.Lock()

    def client(jobs: list[tuple[bytes, str, list]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for body, kind, want in jobs:
            start = time.perf_counter()
            try:
                conn.request("POST", f"/predict?top_k={top_k}", body, {"Content-Type": kind, **auth()})
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                with lock:
                    counts["lost"] += 1
                continue
            took = time.perf_counter() - start
            verdict = "right" if r.status == 200 and json.loads(data) == want else f"wrong ({r.status})"
            with lock:
                latencies.append(took)
                counts[verdict] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(jobs,)) for jobs in work]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "counts": counts, "seconds": time.perf_counter() - start}


def auth() -> dict:
    return {"Authorization": f"Bearer {KEY}"}


# ---------------------------------------------------------------- the fault matrix


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) says width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _raw(port: int, head: str, body_parts: list[bytes], pause: float = 0.0, read: bool = True) -> int | str:
    """Speak HTTP by hand: the head, then each part of the body `pause` s apart; the status, or what happened."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        try:
            s.sendall(head.encode())
            for part in body_parts:
                s.sendall(part)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending: read its answer
        if not read:
            return "closed by the client"
        try:
            line = s.makefile("rb").readline().decode()
        except (ConnectionResetError, OSError):
            return "reset"
        return int(line.split()[1]) if line.startswith("HTTP/") else f"no answer ({line!r:.40})"


def faults(photo: Path, timeout: float) -> list[tuple[str, object, Callable[[int], int | str]]]:
    """(name, the status it must get, how to send it) for each bad request of the matrix."""
    data = photo.read_bytes()
    jpeg = io.BytesIO()
    Image.open(photo).convert("RGB").save(jpeg, "JPEG", quality=90)
    jpeg = jpeg.getvalue()
    png = _png(Image.open(photo).convert("RGB"))
    corrupt_png = bytearray(png)
    idat = corrupt_png.index(b"IDAT")
    corrupt_png[idat + 40 : idat + 240] = bytes(200)  # zeros over the compressed pixels
    bomb = _png(Image.new("1", (12_000, 12_000)))  # ~20 kB that decode to 144 megapixels
    parts = "".join(f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(10_000))
    many = (parts + "--b--\r\n").encode()
    deep = ('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()

    def post(body: bytes, kind: str, headers: dict | None = None) -> Callable[[int], int | str]:
        def send(port: int) -> int | str:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                conn.request("POST", "/predict", body, {"Content-Type": kind, **auth(), **(headers or {})})
                return conn.getresponse().status
            except (OSError, http.client.HTTPException) as e:
                return type(e).__name__
            finally:
                conn.close()

        return send

    def head(length: int, kind: str) -> str:
        return (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {length}\r\n\r\n"
        )

    slow_parts = [png[:10]] * int(timeout + 3)  # 10 bytes a second: past the server's time limit
    return [
        ("truncated JPEG", 400, post(jpeg[: len(jpeg) // 3], "image/jpeg")),
        ("truncated PNG", 400, post(png[: len(png) // 3], "image/png")),
        ("corrupt JPEG", 400, post(jpeg[:2] + bytes(np.random.default_rng(0).integers(0, 256, 4000)), "image/jpeg")),
        ("corrupt PNG", 400, post(bytes(corrupt_png), "image/png")),
        ("PNG bomb (12000x12000 in 20 kB)", 400, post(bomb, "image/png")),
        ("JPEG of 20000x20000", 400, post(_jpeg_claiming(20_000, 20_000), "image/jpeg")),
        ("wrong content type", 415, post(data, "text/plain")),
        ("bad base64", 400, post(b'{"inputs": "@@not base64@@"}', "application/json")),
        ("deeply nested JSON", 400, post(deep, "application/json")),
        ("huge JSON (25 MB)", 413, lambda port: _raw(port, head(25 << 20, "application/json"), [b'{"inputs": "'])),
        ("multipart of 10,000 parts", 400, post(many, "multipart/form-data; boundary=b")),
        ("slow client (body)", 408, lambda port: _raw(port, head(len(png), "image/png"), slow_parts, pause=1.0)),
        ("slow client (half a head, then silence)", 408, lambda port: _raw(port, head(len(png), "image/png")[:40], [])),
        (
            "disconnect mid-upload",
            "closed by the client",
            lambda port: _raw(port, head(len(png), "image/png"), [png[: len(png) // 2]], read=False),
        ),
        ("wrong API key", 401, post(data, "image/png", {"Authorization": "Bearer wrong"})),
        (
            "JSON image as base64, good",
            200,
            post(json.dumps({"inputs": base64.b64encode(data).decode()}).encode(), "application/json"),
        ),  # fmt: skip
    ]


def fault_loop(port: int, matrix: list, done: threading.Event) -> dict[str, Counter]:
    """Each bad request again and again until the load is done (twice at least), interleaved with it (the slow
    clients on threads of their own)."""
    got: dict[str, Counter] = {name: Counter() for name, _, _ in matrix}
    lock = threading.Lock()

    def once(name: str, send) -> None:
        result = send(port)
        with lock:
            got[name][result] += 1

    rounds = 0
    while rounds < 2 or not done.is_set():
        rounds += 1
        slow = [threading.Thread(target=once, args=(n, s)) for n, _, s in matrix if n.startswith("slow")]
        for t in slow:
            t.start()
        for name, _, send in matrix:
            if not name.startswith("slow"):
                once(name, send)
                time.sleep(0.05)
        for t in slow:
            t.join()
    return got


# ---------------------------------------------------------------- the run


def run(
    model: str,
    photos: list[str],
    clients_n: int = 8,
    requests: int = 200,
    threads: int = 2,
    with_faults: bool = False,
    timeout: float = 5.0,
    top_k: int = 5,
    extra: tuple[str, ...] = (),
) -> dict:
    """Start a server on `model`, warm it, then `clients_n` clients x `requests` requests cycling over `photos`
    (and the fault matrix alongside, with_faults). Returns the figures."""
    want = cli_answers(model, photos, top_k)
    bodies = [(Path(p).read_bytes(), KINDS.get(Path(p).suffix.lower(), "image/png"), want[p]) for p in photos]
    server = ServerProcess(model, threads, "--timeout", str(timeout), *extra)
    try:
        pid = server.proc.pid
        warm = [[bodies[(c + i) % len(bodies)] for i in range(4)] for c in range(clients_n)]
        clients(server.port, warm, top_k)  # plans recorded for each batch size, pages touched
        clients(server.port, warm, top_k)
        rss_before = server.rss_mb()
        work = [[bodies[(c + i) % len(bodies)] for i in range(requests)] for c in range(clients_n)]
        matrix = faults(Path(photos[0]), timeout) if with_faults else []
        result: dict = {}
        done = threading.Event()
        faulting = threading.Thread(target=lambda: result.update(faults=fault_loop(server.port, matrix, done)))
        if with_faults:
            faulting.start()
        load = clients(server.port, work, top_k)
        done.set()
        if with_faults:
            faulting.join()
        rss_after = server.rss_mb()
        alive = server.proc.poll() is None and server.proc.pid == pid and server.request("GET", "/health")[0] == 200
    finally:
        server.stop()
    lat = np.array(load["latencies"]) * 1000
    figures = {
        "requests": clients_n * requests,
        "clients": clients_n,
        "threads": threads,
        "counts": dict(load["counts"]),
        "images_per_s": len(lat) / load["seconds"],
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "alive": alive,
    }
    if with_faults:
        figures["faults"] = [
            {"case": name, "want": expected, "got": dict(result["faults"][name])} for name, expected, _ in matrix
        ]
    return figures


def report(figures: dict, job: dict | None) -> str:
    counts = figures["counts"]
    lines = [
        f"{figures['clients']} clients x {figures['requests'] // figures['clients']} requests, server on "
        f"{figures['threads']} threads: {counts.get('right', 0)} right, "
        f"{sum(v for k, v in counts.items() if k.startswith('wrong'))} wrong, {counts.get('lost', 0)} lost",
        f"latency p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms; "
        f"{figures['images_per_s']:.1f} images/s",
        f"server RSS {figures['rss_before_mb']:.1f} MB before the run, {figures['rss_after_mb']:.1f} MB after "
        f"({figures['rss_after_mb'] - figures['rss_before_mb']:+.1f} MB); the same process throughout: "
        f"{figures['alive']}",
    ]
    if job is not None:
        share = figures["images_per_s"] / job["job"]
        lines.append(
            f"the batch job (`tinyvit classify` on the same photos) on {job['threads']} threads, before and after: "
            f"{job['job']:.1f} images/s end to end on average; the server reaches {100 * share:.0f}% of it"
        )
    for f in figures.get("faults", []):
        got = ", ".join(f"{k} x{v}" for k, v in f["got"].items())
        mark = "ok" if set(f["got"]) == {f["want"]} else "UNEXPECTED"
        lines.append(f"  fault {f['case']}: want {f['want']}, got {got} [{mark}]")
    return "\n".join(lines)
