"""The paths the plumbing treats apart, and the web page's Content-Security-Policy: named here, below the flows
that serve them (api/ui.py, api/internal_store.py), so the middlewares never import an endpoint."""

from __future__ import annotations

INTERNAL_PREFIX = "/internal/"  # a local indexer's writes through the service (api/internal_store.py)
UI_PATH = "/ui"  # the web page (api/ui.py)
UI_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
             "media-src 'self' blob:; "
             "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def is_internal_path(path: str) -> bool:
    return path.startswith(INTERNAL_PREFIX)


def is_ui_path(path: str) -> bool:
    return path == UI_PATH or path.startswith(f"{UI_PATH}/")
