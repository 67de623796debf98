"""The web application: the built bundle in ``read_api/ui/`` served under ``/ui/``.

The sources are in ``web/`` (React, TypeScript, Tailwind; built with Vite). The bundle is
committed, so a server needs no Node: ``cd web && npm ci && npm run build`` rebuilds it.

- ``GET /ui`` redirects to ``/ui/``; ``GET /`` (``root_redirect``) too.
- ``GET /ui/assets/<file>``: a content-hashed file, cached for a year as immutable; 404 when
  missing.
- ``GET /ui/<anything else>``: a file of the bundle if there is one, else ``index.html`` (the
  app routes on the client: ``/ui/documents``, ``/ui/chat/<id>``), revalidated on every load
  (``Cache-Control: no-cache``) so a new deployment is picked up at once.

Paths are resolved inside the bundle's directory; anything that leads out of it is a 404.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).parent / "ui"
ASSETS = "assets"
INDEX = "index.html"

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"

# What the page may load: only this origin (the API and the bundle); images also inline
# (data: icons); nothing may frame it. Model output and document text are rendered as text by
# the app; this is the second line of defence.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}

router = APIRouter(include_in_schema=False)
root_redirect = APIRouter(include_in_schema=False)


def _media_type(path: Path) -> str:
    known = _TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _inside(base: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names under ``base``, or None (missing, a directory,
    hidden, or a path that leads outside ``base``: ``..``, absolute, backslashes, NUL)."""
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    root = base.resolve()
    try:
        candidate = (root / relative).resolve()
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def _not_found() -> Response:
    return Response("Not found.\n", status_code=404, media_type="text/plain; charset=utf-8")


def _index(request: Request) -> Response:
    index = UI_DIR / INDEX
    try:
        content = index.read_bytes()
    except FileNotFoundError:
        return Response(
            "The web app is not built: run `cd web && npm ci && npm run build`.\n",
            status_code=503,
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-store"},
        )
    etag = f'"{hashlib.sha256(content).hexdigest()[:32]}"'
    headers = {"Cache-Control": NO_CACHE, "ETag": etag, **_PAGE_HEADERS}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=_TYPES[".html"], headers=headers)


@root_redirect.api_route("/", methods=["GET", "HEAD"])
def root() -> RedirectResponse:
    """The site's root opens the web app."""
    return RedirectResponse("/ui/", status_code=307)


@router.api_route("/ui", methods=["GET", "HEAD"])
def ui_root(request: Request) -> RedirectResponse:
    query = request.url.query
    return RedirectResponse("/ui/" + (f"?{query}" if query else ""), status_code=307)


# Text assets (scripts, styles) are sent gzipped to clients that accept it: about a third
# of their size (the first page's script: 268 KB as built, 83 KB gzipped). Compressed once
# per process: the files are immutable, named by their content.
_COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".svg", ".json", ".map", ".txt", ".html"})


@functools.lru_cache(maxsize=64)
def _gzipped(path: Path, mtime_ns: int) -> bytes:
    return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


def _accepts_gzip(request: Request) -> bool:
    for coding in request.headers.get("accept-encoding", "").split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") != "q=0":
            return True
    return False


@router.api_route("/ui/assets/{name:path}", methods=["GET", "HEAD"])
def ui_asset(name: str, request: Request) -> Response:
    """A file of the bundle named by its content hash: cached for good (gzipped for
    clients that accept it)."""
    found = _inside(UI_DIR / ASSETS, name)
    if found is None:
        return _not_found()
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if found.suffix.lower() in _COMPRESSIBLE:
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request):
            body = _gzipped(found, found.stat().st_mtime_ns)
            headers["Content-Encoding"] = "gzip"
            return Response(body, media_type=_media_type(found), headers=headers)
    return FileResponse(found, media_type=_media_type(found), headers=headers)


@router.api_route("/ui/{route:path}", methods=["GET", "HEAD"])
def ui_page(route: str, request: Request) -> Response:
    """A top-level file of the bundle, or else the app's page (the client routes it)."""
    if route.startswith(f"{ASSETS}/") or route == ASSETS:
        return _not_found()
    if "\x00" in route or "\\" in route or any(p in (".", "..") for p in route.split("/")):
        return _not_found()
    if route and route != INDEX and "/" not in route:
        found = _inside(UI_DIR, route)
        if found is not None:
            return FileResponse(
                found,
                media_type=_media_type(found),
                headers={"Cache-Control": NO_CACHE, "X-Content-Type-Options": "nosniff"},
            )
    return _index(request)
