"""The web page: the static files in ui/ served at /ui/ (and /ui redirected there).

Plain HTML/JS/CSS with no build step and nothing fetched from elsewhere, so it works offline. The page
itself is public (api/http/limits.py); every API call it makes carries the API key when one is set.
Everything under /ui is sent with UI_POLICY as its Content-Security-Policy (added by
api/http/middleware.py SecurityHeaders): only the page's own files run, no inline script or style, and
images (and the videos it plays) come only from this server or the blob:/data: URLs the page makes itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.http.paths import UI_PATH

log = logging.getLogger("service")
UI_DIR = Path(__file__).resolve().parents[1] / "ui"


async def to_ui(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{UI_PATH}/", status_code=307)


def ui_routes() -> list[BaseRoute]:
    """/ui -> /ui/ and the files of ui/ under /ui/ (index.html for the folder); none without ui/."""
    if not (UI_DIR / "index.html").is_file():
        log.warning("%s is missing: no web page at %s/", UI_DIR, UI_PATH)
        return []
    return [
        Route(UI_PATH, to_ui, methods=["GET", "HEAD"]),
        Mount(UI_PATH, app=StaticFiles(directory=UI_DIR, html=True), name="ui"),
    ]


