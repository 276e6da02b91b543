"""`tinyvit serve`: the real server on loopback, spoken to by a real HTTP client (urllib, http.client), its
answers held to the engine's own classify / segment / explain on the same files, and its errors."""

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from serving import DIGITS, SCENE, TINYVIT, Server, free_port, multipart
from tinyvit_engine.weights import DEMO_CLASSIFIER, DEMO_SEGMENTER

import tinyvit_engine as tve

KEY = "s3cret"


@pytest.fixture(scope="module")
def classifier():
    server = Server(DEMO_CLASSIFIER)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def engine():
    return tve.load(DEMO_CLASSIFIER)


def same(answer, expected):
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    np.testing.assert_allclose([a["score"] for a in answer], [e["score"] for e in expected], rtol=1e-6)


def test_health_and_metadata(classifier):
    assert classifier.get("/health")[:2] == (200, {"status": "ok"})
    assert classifier.get("/v2/health/live")[0] == 200
    assert classifier.get("/v2/health/ready")[:2] == (200, {"ready": True})
    status, meta, _ = classifier.get("/v2/models/mobilevit-digits")
    assert status == 200 and meta["platform"] == "tinyvit-engine" and meta["card"]["task"] == "image-classification"
    assert meta["card"]["labels"] == [str(d) for d in range(10)] and meta["card"]["input_size"] == [64, 64]
    assert classifier.get("/v2/models/other")[0] == 404


def test_predict_in_each_form_equals_classify(classifier, engine):
    data = DIGITS[0].read_bytes()
    status, answer, headers = classifier.post(data, "image/png")
    assert status == 200 and float(headers["x-inference-time-ms"]) > 0
    same(answer, engine.classify(DIGITS[0]))
    body, kind = multipart([(p.name, p.read_bytes()) for p in DIGITS])
    status, answers, _ = classifier.post(body, kind)
    assert status == 200 and len(answers) == 3
    for answer, path in zip(answers, DIGITS, strict=True):
        same(answer, engine.classify(path))
    doc = {"inputs": base64.b64encode(data).decode(), "parameters": {"top_k": 2}}
    status, answer, _ = classifier.post(json.dumps(doc).encode(), "application/json")
    assert status == 200 and len(answer) == 2
    same(answer, engine.classify(DIGITS[0], top_k=2))


def test_predict_equals_the_command_line(classifier):
    cli = subprocess.run([TINYVIT, "classify", str(DIGITS[1]), "--json", "--top-k", "3"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    want = json.loads(cli.stdout.splitlines()[0])
    doc = {"inputs": base64.b64encode(DIGITS[1].read_bytes()).decode(), "parameters": {"top_k": 3}}
    status, answer, _ = classifier.post(json.dumps(doc).encode(), "application/json")
    labels = want.get("labels") or want.get("top") or want.get("results")
    assert status == 200 and labels is not None, want
    same(answer, labels)


def png_of(size, mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, kind, status, words",
    [
        (DIGITS[0].read_bytes()[:200], "image/png", 400, "cannot"),
        (b"{not json", "application/json", 400, "not JSON"),
        (b'{"inputs": "@@@"}', "application/json", 400, "base64"),
        (b'{"inputs": 5}', "application/json", 422, "base64 string"),
        (b'{"input": "x"}', "application/json", 422, "inputs"),
        (b"hello", "text/plain", 415, "content type"),
    ],
)
def test_bad_requests_get_their_status(classifier, data, kind, status, words):
    got, answer, _ = classifier.post(data, kind)
    assert got == status and answer["code"] == status and words in answer["error"], answer


def test_a_body_too_large_is_413_before_it_is_read(classifier):
    """Content-Length past the limit: 413 at once, from the headers alone (the client need not send the body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", classifier.port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", str(21 << 20))
    conn.endheaders()
    response = conn.getresponse()
    answer = json.loads(response.read())
    assert response.status == 413 and answer["code"] == 413 and "bytes" in answer["error"]
    conn.close()
    # and a chunked body (no Content-Length) is cut off at the limit as it streams
    conn = http.client.HTTPConnection("127.0.0.1", classifier.port, timeout=30)
    try:
        conn.request("POST", "/predict", body=iter([b"x" * (1 << 20)] * 21), headers={"Content-Type": "image/png"},
                     encode_chunked=True)  # fmt: skip
        response = conn.getresponse()
        assert response.status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server answered 413 and closed while the client was still sending: also a refusal
    conn.close()


def test_bad_parameters_and_formats(classifier):
    image = base64.b64encode(DIGITS[0].read_bytes()).decode()
    for parameters, words in [({"top_k": 0}, "top_k"), ({"top_k": "3"}, "top_k"), ({"threshold": 1}, "threshold")]:
        doc = json.dumps({"inputs": image, "parameters": parameters}).encode()
        status, answer, _ = classifier.post(doc, "application/json")
        assert status == 422 and words in answer["error"], answer
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "ICO")
    status, answer, _ = classifier.post(buffer.getvalue(), "image/x-icon")
    assert status == 415 and "ICO" in answer["error"]
    status, answer, _ = classifier.post(png_of((8000, 8000), "1"), "image/png")
    assert status == 400 and "pixels" in answer["error"]
    body, kind = multipart([("a.png", DIGITS[0].read_bytes())] * 17)
    status, answer, _ = classifier.post(body, kind)
    assert status in (400, 422) and answer["code"] == status


def test_api_key():
    server = Server(DEMO_CLASSIFIER, "--api-key", KEY)
    try:
        data = DIGITS[0].read_bytes()
        assert server.post(data, "image/png")[0] == 401
        assert server.post(data, "image/png", headers={"Authorization": "Bearer nope"})[0] == 401
        assert server.post(data, "image/png", headers={"Authorization": f"Bearer {KEY}"})[0] == 200
        assert server.get("/health")[0] == 200  # health stays public, as load balancers probe it
    finally:
        server.stop()


@pytest.fixture(scope="module")
def segmenter():
    server = Server(DEMO_SEGMENTER)
    yield server
    server.stop()


def test_segmentation_masks_are_pngs_at_the_image_size(segmenter):
    status, answer, _ = segmenter.post(SCENE.read_bytes(), "image/png")
    want = tve.load(DEMO_SEGMENTER).segment(SCENE)
    assert status == 200 and [a["label"] for a in answer] == [s["label"] for s in want["segments"]]
    size = Image.open(SCENE).size
    for a, s in zip(answer, want["segments"], strict=True):
        mask = Image.open(io.BytesIO(base64.b64decode(a["mask"])))
        assert a["score"] is None and mask.size == size and mask.mode == "L"
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(s["mask"]))


def test_segmentation_label_map_and_overlay_as_one_png(segmenter):
    from tinyvit_engine.jobs import label_image, overlay

    want = tve.load(DEMO_SEGMENTER).segment(SCENE)["label_map"]
    status, data, headers = segmenter.post(SCENE.read_bytes(), "image/png", path="/predict?output=label_map")
    assert status == 200 and headers["content-type"] == "image/png"
    labels = Image.open(io.BytesIO(data))
    assert labels.mode == "P" and labels.getpalette() == label_image(want).getpalette()
    np.testing.assert_array_equal(np.asarray(labels), want)
    doc = {"inputs": base64.b64encode(SCENE.read_bytes()).decode(), "parameters": {"output": "overlay"}}
    status, data, _ = segmenter.post(json.dumps(doc).encode(), "application/json")
    assert status == 200
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(data))), np.asarray(overlay(Image.open(SCENE).convert("RGB"), want))
    )
    body, kind = multipart([(SCENE.name, SCENE.read_bytes())] * 2)
    status, answer, _ = segmenter.post(body, kind, path="/predict?output=overlay")
    assert status == 422 and "one image" in answer["error"]
    status, answer, _ = segmenter.post(SCENE.read_bytes(), "image/png", path="/predict?output=svg")
    assert status == 422 and "output" in answer["error"]


@pytest.mark.parametrize("which", ["classifier", "segmenter"])
def test_explain_equals_the_command_line(which, request, tmp_path):
    server = request.getfixturevalue(which)
    photo, model = (DIGITS[2], DEMO_CLASSIFIER) if which == "classifier" else (SCENE, DEMO_SEGMENTER)
    point = ["--point", "20,30"] if which == "classifier" else []
    subprocess.run([TINYVIT, "explain", str(photo), "--model", str(model), "-o", str(tmp_path), *point], check=True,
                   capture_output=True)  # fmt: skip
    query = "?point=20,30" if point else ""
    status, answer, headers = server.post(photo.read_bytes(), "image/png", path="/explain" + query)
    assert status == 200 and float(headers["x-inference-time-ms"]) > 0
    files = sorted(tmp_path.glob(f"{photo.stem}.layer*.png"))
    assert len(answer["layers"]) == len(files) > 0
    assert (answer["query"] is not None) == (tve.load(model).config.model_type == "mobilevit")
    for b64, file in zip(answer["layers"], files, strict=True):
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))), np.asarray(Image.open(file))
        )
    status, answer, _ = server.post(photo.read_bytes(), "image/png", path="/explain?point=1e9,0")
    assert status == 400 and "outside" in answer["error"], answer
    body, kind = multipart([(photo.name, photo.read_bytes())] * 2)
    assert server.post(body, kind, path="/explain")[0] == 422


def test_the_page_is_served_whole(classifier):
    import urllib.request

    with urllib.request.urlopen(classifier.url + "/", timeout=30) as r:
        page = r.read().decode()
    assert r.status == 200 and 'data-model="&quot;mobilevit-digits&quot;"' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing from elsewhere


def test_the_card_says_how_the_weights_are_stored():
    int8 = DEMO_CLASSIFIER.with_name("mobilevit-digits.int8.safetensors")
    server = Server(int8)
    try:
        status, meta, _ = server.get("/v2/models/mobilevit-digits.int8")
        assert status == 200 and meta["card"]["storage"] == "int8"
        same(server.post(DIGITS[0].read_bytes(), "image/png")[1], tve.load(int8).classify(DIGITS[0]))
    finally:
        server.stop()


def test_a_full_queue_is_429_with_retry_after():
    """One image may wait; eight clients at once: the ones past the queue get 429 and Retry-After, the rest their
    right answer, and the server goes on answering."""
    import threading

    photo = DIGITS[0].read_bytes()
    server = Server(DEMO_CLASSIFIER, "--queue", "1", "--max-batch", "1")
    try:
        got = []

        def client():
            for _ in range(6):
                got.append(server.post(photo, "image/png"))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        full = [(a, h) for status, a, h in got if status == 429]
        assert full and all(h["retry-after"] == "1" and "waiting" in a["error"] for a, h in full)
        want = tve.load(DEMO_CLASSIFIER).classify(DIGITS[0])
        for status, answer, _ in got:
            assert status in (200, 429)
            if status == 200:
                same(answer, want)
        assert server.post(photo, "image/png")[0] == 200
    finally:
        server.stop()


def test_without_the_serve_extra_the_command_says_what_to_install():
    code = "import sys; sys.modules['uvicorn'] = None; from tinyvit_engine.cli import main; sys.exit(main(['serve']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "pip install 'tinyvit-engine[serve]'" in done.stderr


def test_health_says_503_until_the_model_is_ready_and_why_it_is_not(tmp_path):
    """A model that cannot load: /health, /v2/health/ready and /predict say 503 with the reason, live says 200."""
    import http.client
    import time

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(DEMO_CLASSIFIER.read_bytes()[:100])
    port = free_port()
    proc = subprocess.Popen([TINYVIT, "serve", str(broken), "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/health")
                r = conn.getresponse()
                health = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        while health["status"] == "loading model":
            assert r.status == 503
            conn.request("GET", "/health")
            r = conn.getresponse()
            health = json.loads(r.read())
        assert r.status == 503 and health["status"] == "error" and "safetensors" in health["error"]
        asks = [("GET", "/v2/health/ready", None, 503), ("GET", "/v2/health/live", None, 200)]
        for method, path, body, status in [*asks, ("POST", "/predict", DIGITS[0].read_bytes(), 503)]:
            conn.request(method, path, body, {"Content-Type": "image/png"})
            r = conn.getresponse()
            answer = json.loads(r.read())
            assert r.status == status, answer
        assert "safetensors" in answer["error"] and answer["code"] == 503
    finally:
        proc.terminate()
        proc.wait(timeout=30)
