"""`tinyvit serve`: one model behind HTTP (Starlette + uvicorn, the optional extra `tinyvit-engine[serve]`).

- app.py   the routes: POST /predict in Hugging Face's task format, the Open Inference Protocol's health and
           metadata (/v2/health/live, /v2/health/ready, /v2/models/{name}) and llama.cpp's GET /health; errors in one
           JSON shape; the limits that keep it safe on a network.
"""

from __future__ import annotations

from .app import Limits, create_app, serve

__all__ = ["Limits", "create_app", "serve"]
