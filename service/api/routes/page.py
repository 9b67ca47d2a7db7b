"""The page at ``/``: one static HTML + JS + CSS file set (service/static/), no build step, no CDN.

The files carry no data, so they are served without the API key; the page sends the key the user types
with each API call. Neither route is in the OpenAPI schema (it describes the JSON API).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


def mount(app: FastAPI) -> None:
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
