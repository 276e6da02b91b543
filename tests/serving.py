"""Test helpers for `tinyvit serve`: the real server in a subprocess on a free loopback port, and a real HTTP client."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINYVIT = str(Path(sys.executable).with_name("tinyvit"))
DIGITS = [ROOT / "examples" / f"digit-{d}.png" for d in (3, 6, 7)]
SCENE = ROOT / "examples" / "scene-0.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [TINYVIT, "--threads", "1", "serve", str(model), "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def request(self, path, data=None, headers=None, method=None):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
                answer = body if r.headers.get_content_type() != "application/json" else json.loads(body)
                return r.status, answer, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def get(self, path, headers=None):
        return self.request(path, headers=headers)

    def post(self, data, content_type, path="/predict", headers=None):
        return self.request(path, data, {"Content-Type": content_type, **(headers or {})}, "POST")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def multipart(files):
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in files:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
