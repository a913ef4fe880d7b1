"""Routes of the web page: the two views as HTML documents and their static assets.

The assets are a fixed set of files in ``static/`` (package data), served by one route
(``/ui/static/{name}``) from an allow-list made at import, so no request path reaches the file
system and the request metrics get one ``route`` label value for all of them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/ui/static"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
ASSETS: dict[str, Path] = {p.name: p for p in sorted(STATIC_DIR.iterdir())
                           if p.is_file() and p.suffix in _MEDIA_TYPES}

# Only this origin: no CDN, no inline script; photos are previewed from blob:/data: URLs.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(ASSETS[name], media_type=_MEDIA_TYPES[".html"], headers=PAGE_HEADERS)


@router.get("/")
async def try_page() -> FileResponse:
    return _page("index.html")


@router.get("/ui/try")
async def try_page_alias() -> FileResponse:
    return _page("index.html")


@router.get("/ui/recent")
async def recent_page() -> FileResponse:
    return _page("recent.html")


@router.get("/ui")
@router.get("/ui/")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get(STATIC_PREFIX + "/{name}")
async def static_asset(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        return JSONResponse(status_code=404, content={
            "error": "NotFound", "message": f"no asset {name!r} under {STATIC_PREFIX}/"})
    # no-cache: the browser revalidates (ETag) so a new release shows at once.
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def mount_ui(app: FastAPI) -> None:
    """Add the page's routes to ``app``."""
    app.include_router(router)
