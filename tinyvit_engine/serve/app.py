"""The HTTP service: one model per process, answers equal to `tinyvit classify` / `segment` on the same file.

Routes
  POST /predict          an image as the raw body (Content-Type: image/*), as multipart field `file` (one or
                         more), or JSON {"inputs": base64 | [base64, ...], "parameters": {"top_k": k}}.
                         Classification: [{"label", "score"}]; segmentation: [{"label", "score": null, "mask":
                         base64 PNG at the image's size}], as transformers' pipelines give them (a list per image
                         when several are sent).
  GET /health            llama.cpp's: 200 {"status": "ok"} once a warm-up inference has run, 503 before
  GET /v2/health/live    the Open Inference Protocol (KServe, Triton, OpenVINO Model Server): 200 while the process
  GET /v2/health/ready   ... and 200 once ready, 503 before
  GET /v2/models/{name}  the model's metadata: name, platform, inputs, outputs, and the model card

Errors are {"error": message, "code": status}: 400 an undecodable image or bad JSON, 401 a wrong or missing API
key, 413 a body too large, 415 a content type or image format not taken, 422 bad parameters, 429 the queue is full
(with Retry-After), 503 not ready. Every answer says its inference time in X-Inference-Time-Ms.

Safe on a network: the body, the decoded pixels, the images per request, the multipart parts and fields and the
formats decoded are bounded (Limits); nothing a client sends names a path on the server; inference runs on the
engine's threads, off the event loop, behind a bounded queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import TinyVitError
from ..model import Model, load
from ..processor import load_image

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # decoded; anything else is 415


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    body_bytes: int = 20 << 20  # a request body (raw, multipart or JSON)
    pixels: int = 40_000_000  # decoded pixels of one image (a PNG bomb is a 400, not an out-of-memory)
    images: int = 16  # images per request
    parts: int = 16  # multipart parts and fields
    queue: int = 32  # requests waiting for the model; past that, 429
    top_k: int = 1000


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Service:
    """The model, loaded and warmed on a thread of its own so that /health can say 503 meanwhile."""

    def __init__(self, model_path: str, limits: Limits) -> None:
        self.model_path, self.limits = model_path, limits
        self.model: Model | None = None
        self.failed: str | None = None
        self.waiting = 0
        self.lock = threading.Lock()  # one inference at a time: it already uses every engine thread
        threading.Thread(target=self._load, daemon=True, name="tinyvit-load").start()

    def _load(self) -> None:
        try:
            model = load(self.model_path)
            warm = Image.new("RGB", (64, 64), (127, 127, 127))
            (model.classify if model.config.task == "image-classification" else model.segment)(warm)
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
            "storage": getattr(model, "storage", None),
        }

    def predict(self, images: list[bytes], top_k: int | None) -> list:
        """The pipeline's answer per image (the model's own processor, as the CLI)."""
        model = self.ready()
        decoded = []
        for i, data in enumerate(images):
            name = f"image {i}" if len(images) > 1 else "the image"
            header = Image.open(io.BytesIO(data)) if data else None
            if header is not None and header.format not in FORMATS:
                raise HTTPError(415, f"{name}: {header.format} images are not taken; send one of {', '.join(FORMATS)}")
            if header is not None and header.width * header.height > self.limits.pixels:
                raise HTTPError(400, f"{name}: {header.width}x{header.height} is more than {self.limits.pixels} pixels")
            decoded.append(load_image(bytes(data), name=name, formats=FORMATS))
        with self.lock:
            if model.config.task == "image-classification":
                return model.classify(decoded, top_k=top_k or 5)
            return [[_segment_json(s) for s in r["segments"]] for r in model.segment(decoded)]


def _segment_json(segment: dict) -> dict:
    buffer = io.BytesIO()
    segment["mask"].save(buffer, format="PNG")
    return {"label": segment["label"], "score": segment["score"], "mask": base64.b64encode(buffer.getvalue()).decode()}


def model_name(path: str) -> str:
    name = Path(str(path)).name
    return name.removesuffix(".safetensors") or "model"


# ---------------------------------------------------------------- the ASGI app


def create_app(model_path: str, api_key: str | None = None, limits: Limits = Limits()):
    """The Starlette app serving `model_path` (an engine file, a checkpoint directory or a Hub id)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    service = Service(model_path, limits)

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

        return run

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

    async def predict(request: Request):
        service.ready()
        images, parameters = await _read_request(request, limits)
        top_k = parameters.get("top_k")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limits.top_k
        ):
            raise HTTPError(422, f"parameters.top_k = {top_k!r:.40}: expected an integer in [1, {limits.top_k}]")
        unknown = sorted(set(parameters) - {"top_k"})
        if unknown:
            raise HTTPError(422, f"parameters.{unknown[0]}: not a parameter of this task (top_k is)")
        if service.waiting >= limits.queue:
            raise HTTPError(429, f"{service.waiting} requests are waiting; try again shortly", {"Retry-After": "1"})
        service.waiting += 1
        start = time.perf_counter()
        try:
            answers = await asyncio.to_thread(service.predict, images, top_k)
        finally:
            service.waiting -= 1
        elapsed = f"{(time.perf_counter() - start) * 1000:.1f}"
        return JSONResponse(answers[0] if len(answers) == 1 else answers, headers={"X-Inference-Time-Ms": elapsed})

    routes = [
        Route("/health", guarded(health, public=True)),
        Route("/v2/health/live", guarded(live, public=True)),
        Route("/v2/health/ready", guarded(ready, public=True)),
        Route("/v2/models/{name}", guarded(metadata)),
        Route("/predict", guarded(predict), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.service = service
    return app


async def _read_request(request, limits: Limits) -> tuple[list[bytes], dict]:
    """The images and parameters of a /predict request, in any of its three forms, within the limits."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.body_bytes:
        raise HTTPError(413, f"the body is {declared} bytes; at most {limits.body_bytes} are taken")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=limits.parts, max_fields=limits.parts)
        except Exception as e:  # noqa: BLE001 -- python-multipart's errors: a malformed or oversized form
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


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(model_path, api_key),
        host=host,
        port=port,
        log_level="warning",
        limit_concurrency=Limits().queue * 2,
        timeout_keep_alive=5,
    )
