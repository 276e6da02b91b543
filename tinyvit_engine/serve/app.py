"""The HTTP service: one model per process, answers equal to `tinyvit classify` / `segment` / `explain` on the same
file.

Routes
  GET /                  the web page (page.html: no external assets)
  POST /predict          an image as the raw body (Content-Type: image/*), as multipart field `file` (one or
                         more), or JSON {"inputs": base64 | [base64, ...], "parameters": {...}}; parameters also
                         as the query string (?top_k=3). Classification: [{"label", "score"}] (top_k, default 5);
                         segmentation: [{"label", "score": null, "mask": base64 PNG at the image's size}], as
                         transformers' pipelines give them (a list per image when several are sent), or with
                         output=label_map / overlay one PNG (class indices in VOC's colours / the classes over the
                         photo).
  POST /explain          one image (the same three forms): {"what", "query", "layers": [base64 PNG, ...]}, the
                         attention heatmap of each transformer layer over the model's view (`tinyvit explain`);
                         parameters.point = [x, y] (pixels of the image) picks MobileViT's query patch
  GET /health            llama.cpp's: 200 {"status": "ok"} once a warm-up inference has run, 503 before
  GET /v2/health/live    the Open Inference Protocol (KServe, Triton, OpenVINO Model Server): 200 while the process
  GET /v2/health/ready   ... and 200 once ready, 503 before
  GET /v2/models/{name}  the model's metadata: name, platform, inputs, outputs, and the model card

Errors are {"error": message, "code": status}: 400 an undecodable image or bad JSON, 401 a wrong or missing API
key, 408 a body not sent in time, 413 a body too large, 415 a content type or image format not taken, 422 bad
parameters, 429 the queue is full (with Retry-After), 503 not ready or an answer not ready in time. Every answer
says the server's time on it (decoding, queue, model, encoding) in X-Inference-Time-Ms.

Safe on a network: the body, the time to send it, the decoded pixels, the images per request, the multipart parts
and fields and the formats decoded are bounded (Limits); nothing a client sends names a path on the server.
Decoding runs off the event loop; inference runs on the batch jobs' streams behind a bounded queue (batcher.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import python_multipart  # noqa: F401 -- Starlette's form parser: without it no multipart upload could be read
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..api.explain import heatmaps
from ..api.explain import overlay as heat_overlay
from ..errors import TinyVitError
from ..formats import weights_file
from ..jobs import label_image, overlay
from ..model import Model, load
from ..postprocess import post_process_semantic_segmentation, segments, top_labels
from ..processor import load_image
from .batcher import SIZES, Batcher, Full

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # decoded; anything else is 415
PAGE = Path(__file__).with_name("page.html")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    body_bytes: int = 20 << 20  # a request body (raw, multipart or JSON)
    pixels: int = 40_000_000  # decoded pixels of one image (a PNG bomb is a 400, not an out-of-memory)
    images: int = 16  # images per request
    parts: int = 16  # multipart parts and fields
    queue: int = 64  # images waiting for the model; past that, 429
    top_k: int = 1000
    batch: int = 4  # waiting images run as one batch, up to this many (1: one at a time); see batcher.SIZES
    seconds: float = 30.0  # to send the head, the body, and again for the answer (a slow client gets 408)
    connections: int = 512  # open at once; past that, uvicorn answers 503 (its own, in plain text)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Service:
    """The model, loaded and warmed on a thread of its own so that /health can say 503 meanwhile, and its streams."""

    def __init__(self, model_path: str, limits: Limits, threads: int) -> None:
        self.model_path, self.limits, self.threads = model_path, limits, threads
        self.model: Model | None = None
        self.batcher: Batcher | None = None
        self.failed: str | None = None
        # decoding and encoding: a pool as wide as the model's threads (each thread's malloc arena keeps its
        # buffers: a wider pool only grows the RSS, the cores are busy either way)
        self.pool = ThreadPoolExecutor(max(2, threads), thread_name_prefix="tinyvit-decode")
        threading.Thread(target=self._load, daemon=True, name="tinyvit-load").start()

    def _load(self) -> None:
        try:
            model = load(self.model_path)
            warm = Image.new("RGB", (64, 64), (127, 127, 127))
            (model.classify if model.config.task == "image-classification" else model.segment)(warm)
            sizes = tuple(s for s in SIZES if s <= self.limits.batch)
            self.batcher = Batcher(model, self.threads, self.limits.queue, sizes)
            self.storage = storage(model.path)
            self.model = model
        except Exception as e:  # noqa: BLE001 -- said by /health and every request from then on
            self.failed = f"{type(e).__name__}: {e}"

    def ready(self) -> Model:
        if self.model is None:
            raise HTTPError(503, self.failed or "the model is loading (its kernels may be compiling)")
        return self.model

    def card(self) -> dict:
        model = self.ready()
        cfg = model.config
        pre = model.processor
        return {
            "name": model_name(self.model_path),
            "family": cfg.model_type,
            "task": cfg.task,
            "architecture": cfg.architecture,
            "labels": [cfg.id2label[i] for i in range(cfg.num_labels)],
            "input_size": list(pre.crop_hw) if pre.do_center_crop else None,
            "storage": self.storage,
        }

    def decode(self, data: bytes, name: str) -> Image.Image:
        """One upload as an RGB image, within the format allow-list and the pixel limit (read off the header)."""
        try:
            with Image.open(io.BytesIO(data)) as header:
                kind, width, height = header.format, header.width, header.height
        except Exception:  # noqa: BLE001 -- not an image: load_image below says why, as the CLI would
            kind = None
        if kind is not None and kind not in FORMATS:
            raise HTTPError(415, f"{name}: {kind} images are not taken; send one of {', '.join(FORMATS)}")
        if kind is not None and width * height > self.limits.pixels:
            raise HTTPError(400, f"{name}: {width}x{height} is more than {self.limits.pixels} pixels")
        return load_image(bytes(data), name=name, formats=FORMATS)

    def prepare(self, images: list[bytes]) -> list[tuple[Image.Image, object]]:
        """(image, pixel values) per upload: decoded and preprocessed, as a batch job does (on a worker thread)."""
        model = self.ready()
        named = [(data, f"image {i}" if len(images) > 1 else "the image") for i, data in enumerate(images)]
        decoded = [self.decode(data, name) for data, name in named]
        return [(image, model.processor.process_one(image)) for image in decoded]

    def answer(self, image: Image.Image, logits, parameters: dict):
        """The pipeline's answer for one image from its logits row (on a worker thread)."""
        cfg = self.ready().config
        if cfg.task == "image-classification":
            return top_labels(cfg, logits, parameters.get("top_k", 5))[0]
        (label_map,) = post_process_semantic_segmentation(logits, [(image.height, image.width)])
        output = parameters.get("output", "segments")
        if output == "label_map":
            return png(label_image(label_map))
        if output == "overlay":
            return png(overlay(image, label_map))
        return [
            {"label": s["label"], "score": s["score"], "mask": base64.b64encode(png(s["mask"])).decode()}
            for s in segments(cfg, label_map)
        ]

    def attention(self, image: Image.Image, point: tuple[float, float] | None) -> tuple:
        """`tinyvit explain`'s heatmaps (the model called alone, on a stream)."""
        return heatmaps(self.ready(), image, point)

    @staticmethod
    def explain(view, maps: list, query: tuple | None) -> dict:
        """The heatmaps over the model's view as base64 PNGs (on a worker thread)."""
        return {
            "what": "attention of the query patch" if query is not None else "context scores",
            "query": None if query is None else [round(query[0], 2), round(query[1], 2)],
            "layers": [base64.b64encode(png(heat_overlay(view, heat, query))).decode() for heat in maps],
        }


def storage(path: Path | None) -> str:
    """The dtype the model's weights are stored in: an engine file's header says it; a checkpoint is float32."""
    if path is not None and Path(path).is_file():
        return weights_file.read_header(path)[0]
    return "float32 (a transformers checkpoint)"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def model_name(path: str) -> str:
    name = Path(str(path)).name
    return name.removesuffix(".safetensors") or "model"


def query_parameters(query) -> dict:
    """The query string's parameters, typed as JSON would give them (?top_k=3, ?point=120,80, ?output=overlay)."""
    typed = {}
    for key, value in query.items():
        if key == "top_k" and value.isdigit():
            typed[key] = int(value)
        elif key == "point":
            try:
                typed[key] = [float(v) for v in value.split(",")]
            except ValueError:
                typed[key] = value
        else:
            typed[key] = value
    return typed


def check_parameters(task: str, route: str, parameters: dict, limits: Limits) -> dict:
    """The request's parameters, checked and typed (query-string values arrive as text); unknown ones are 422."""
    known = {"top_k"} if task == "image-classification" else {"output"}
    known = {"point"} if route == "explain" else known
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise HTTPError(422, f"parameters.{unknown[0]}: not a parameter of /{route} here ({', '.join(known)} is)")
    checked = {}
    if "top_k" in parameters:
        k = parameters["top_k"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.top_k:
            raise HTTPError(422, f"parameters.top_k = {k!r:.40}: expected an integer in [1, {limits.top_k}]")
        checked["top_k"] = k
    if "output" in parameters:
        if parameters["output"] not in ("segments", "label_map", "overlay"):
            raise HTTPError(422, f"parameters.output = {parameters['output']!r:.40}: segments, label_map or overlay")
        checked["output"] = parameters["output"]
    if "point" in parameters:
        try:
            x, y = (float(v) for v in parameters["point"] if not isinstance(v, (str, bool)))
        except (TypeError, ValueError):
            raise HTTPError(422, f"parameters.point = {parameters['point']!r:.40}: expected [x, y] pixels") from None
        checked["point"] = (x, y)
    return checked


# ---------------------------------------------------------------- the ASGI app


def create_app(model_path: str, api_key: str | None = None, limits: Limits = Limits(), threads: int = 1):
    """The Starlette app serving `model_path` (an engine file, a checkpoint directory or a Hub id) on `threads`
    Numba threads."""

    service = Service(model_path, limits, threads)
    name = model_name(model_path)
    page = PAGE.read_text().replace("{{MODEL}}", html.escape(json.dumps(name)))

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split()), "code": status}, status, headers=headers)

    def guarded(handler, public: bool = False):
        async def run(request: Request):
            try:
                if api_key and not public and request.headers.get("authorization") != f"Bearer {api_key}":
                    raise HTTPError(401, "a wrong or missing API key (Authorization: Bearer <key>)")
                return await handler(request)
            except HTTPError as e:
                return error(e.status, e.message, e.headers)
            except TinyVitError as e:
                return error(400, str(e))
            except ClientDisconnect:  # nobody is left to answer
                return Response(status_code=499)

        return run

    async def index(request: Request):
        return HTMLResponse(page)

    async def health(request: Request):
        if service.model is None:
            status = "error" if service.failed else "loading model"
            return JSONResponse({"status": status, "error": service.failed}, 503)
        return JSONResponse({"status": "ok"})

    async def live(request: Request):
        return JSONResponse({"live": True})

    async def ready(request: Request):
        return JSONResponse({"ready": service.model is not None}, 200 if service.model is not None else 503)

    async def metadata(request: Request):
        card = service.card()
        if request.path_params["name"] != card["name"]:
            raise HTTPError(404, f"no model {request.path_params['name']!r:.80} here; this server has {card['name']!r}")
        return JSONResponse(
            {
                "name": card["name"],
                "versions": ["1"],
                "platform": "tinyvit-engine",
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "predictions", "datatype": "BYTES", "shape": [-1]}],
                "card": card,
            }
        )

    async def read(request: Request, route: str) -> tuple[list[tuple[Image.Image, object]], dict]:
        """The request's images, decoded and preprocessed off the event loop, and its checked parameters."""
        model = service.ready()
        try:
            images, parameters = await asyncio.wait_for(_read_request(request, limits), limits.seconds)
        except asyncio.TimeoutError:
            raise HTTPError(408, f"the request was not sent within {limits.seconds:g} s") from None
        parameters = check_parameters(
            model.config.task, route, {**query_parameters(request.query_params), **parameters}, limits
        )
        if route == "explain" and len(images) != 1:
            raise HTTPError(422, f"{len(images)} images; /explain takes one")
        if parameters.get("output", "segments") != "segments" and len(images) != 1:
            raise HTTPError(422, f"output={parameters['output']} answers one PNG: send one image, not {len(images)}")
        return await off_loop(service.prepare, images), parameters

    async def off_loop(function, *args):
        return await asyncio.get_running_loop().run_in_executor(service.pool, function, *args)

    async def queued(pixels=None, call=None):
        """The model's answer through the queue, within the time limit (the work goes on if the wait is cut)."""
        try:
            future = service.batcher.submit(pixels, call)
        except Full as e:
            raise HTTPError(429, f"{e}; try again shortly", {"Retry-After": "1"}) from None
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), limits.seconds)
        except asyncio.TimeoutError:
            raise HTTPError(503, f"no answer within {limits.seconds:g} s: the server is overloaded") from None

    def timed(start: float) -> dict:
        return {"X-Inference-Time-Ms": f"{(time.perf_counter() - start) * 1000:.1f}"}

    async def predict(request: Request):
        prepared, parameters = await read(request, "predict")
        start = time.perf_counter()
        logits = await asyncio.gather(*(queued(pixels) for _, pixels in prepared))
        answers = await off_loop(
            lambda: [service.answer(image, row, parameters) for (image, _), row in zip(prepared, logits, strict=True)]
        )
        if isinstance(answers[0], bytes):
            return Response(answers[0], media_type="image/png", headers=timed(start))
        return JSONResponse(answers[0] if len(answers) == 1 else answers, headers=timed(start))

    async def explain(request: Request):
        [(image, _)], parameters = await read(request, "explain")
        start = time.perf_counter()
        attention = await queued(call=lambda: service.attention(image, parameters.get("point")))
        return JSONResponse(await off_loop(service.explain, *attention), headers=timed(start))

    routes = [
        Route("/", index),
        Route("/health", guarded(health, public=True)),
        Route("/v2/health/live", guarded(live, public=True)),
        Route("/v2/health/ready", guarded(ready, public=True)),
        Route("/v2/models/{name}", guarded(metadata)),
        Route("/predict", guarded(predict), methods=["POST"]),
        Route("/explain", guarded(explain), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.service = service
    return app


async def _read_request(request, limits: Limits) -> tuple[list[bytes], dict]:
    """The images and parameters of a request, in any of its three forms, within the limits."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.body_bytes:
        raise HTTPError(413, f"the body is {declared} bytes; at most {limits.body_bytes} are taken")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=limits.parts, max_fields=limits.parts)
        except Exception as e:  # noqa: BLE001 -- python-multipart's errors: a malformed or oversized form
            if type(e).__name__ == "ClientDisconnect":
                raise
            raise HTTPError(400, f"the multipart form cannot be read: {e}") from None
        files = [f for f in form.getlist("file") if hasattr(f, "read")]
        if not files:
            raise HTTPError(422, "a multipart request sends its images as field 'file'")
        if len(files) > limits.images:
            raise HTTPError(422, f"{len(files)} images; at most {limits.images} per request")
        images = []
        for f in files:
            images.append(await f.read())
        return images, {}
    body = await _body(request, limits)
    if kind.startswith("image/"):
        return [body], {}
    if kind == "application/json":
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise HTTPError(400, f"the body is not JSON: {str(e)[:100]}") from None
        if not isinstance(doc, dict) or "inputs" not in doc:
            raise HTTPError(422, 'expected {"inputs": <base64 image> | [<base64>, ...], "parameters": {...}}')
        inputs = doc["inputs"] if isinstance(doc["inputs"], list) else [doc["inputs"]]
        if not inputs or len(inputs) > limits.images:
            raise HTTPError(422, f"{len(inputs)} images; 1 to {limits.images} per request")
        parameters = doc.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise HTTPError(422, "parameters: expected an object")
        images = []
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise HTTPError(422, f"inputs[{i}]: expected a base64 string")
            try:
                images.append(
                    base64.b64decode(item.split(",", 1)[-1] if item.startswith("data:") else item, validate=True)
                )
            except (binascii.Error, ValueError):
                raise HTTPError(400, f"inputs[{i}]: not valid base64") from None
        return images, parameters
    raise HTTPError(415, f"content type {kind or 'none'!r}: send image/*, multipart/form-data or application/json")


async def _body(request, limits: Limits) -> bytes:
    """The body, read up to the limit (a client that lies about Content-Length is cut off too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.body_bytes:
            raise HTTPError(413, f"the body is more than {limits.body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def head_timed_protocol(seconds: float):
    """uvicorn's h11 protocol with a time limit on a request's head. uvicorn waits without end for a connection that
    sends nothing, or half a head, and each such client (a slowloris) holds a connection slot; here the head must
    arrive within `seconds` of the connection, or of the previous answer, or the client gets 408 and is closed.
    (The body's own limit is in the app: Limits.seconds.)"""
    body = json.dumps({"error": f"the request's head was not sent within {seconds:g} s", "code": 408}).encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )

    class HeadTimed(H11Protocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
            super().connection_lost(exc)

        def _waiting(self) -> bool:  # for a head: no request yet, or the last one answered
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._waiting() and self.deadline is None:
                self.deadline = self.loop.call_later(seconds, self._expire)
            elif not self._waiting() and self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            self.deadline = None
            if self._waiting() and not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return HeadTimed


def serve(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    threads: int = 1,
    limits: Limits = Limits(),
) -> None:
    """Run the service with uvicorn until interrupted."""
    uvicorn.run(
        create_app(model_path, api_key, limits, threads),
        host=host,
        port=port,
        log_level="warning",
        limit_concurrency=limits.connections,
        timeout_keep_alive=5,
        http=head_timed_protocol(limits.seconds),
    )
