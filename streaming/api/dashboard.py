"""The operator dashboard at `/`: the static files of its production build (`dashboard/dist`,
made by `make setup` with `npm ci && npm run build`), with a fallback to `index.html` for every
other path that is not the API's, so a browser may open or reload any of the app's own URLs
(`/machines/press-07`, `/alarms`). Without a build, `/` says how to make one."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

from streaming.stack.local import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "dashboard" / "dist"
# Paths that belong to the API: never answered with the app's page.
API_PATHS = ("/api/", "/webhook/", "/docs", "/redoc", "/openapi.json", "/health")

MISSING = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>OT dashboard: not built</title></head>
<body style="font-family:sans-serif;background:#111;color:#eee;padding:2em;max-width:50em">
<h1>The dashboard is not built</h1>
<p><code>ot api</code> serves the dashboard from <code>{folder}</code>, which holds no
<code>index.html</code>. Build it with <code>make setup</code> (runs <code>npm ci</code> and
<code>npm run build</code> in <code>dashboard/</code>; needs Node.js 20+), or set
<code>OT_DASHBOARD_DIR</code> to a built copy.</p>
<p>The API itself is up: <a style="color:#8cf" href="/docs">/docs</a>,
<a style="color:#8cf" href="/api/v1/machines">/api/v1/machines</a>.</p>
</body></html>"""


def mount(app: FastAPI, folder: Path | None) -> None:
    """Add the dashboard's routes (after every API route, so those win)."""
    root = (folder or DEFAULT_DIR).resolve()

    @app.get("/{path:path}", include_in_schema=False)
    async def dashboard(path: str, request: Request) -> Response:
        url_path = request.url.path
        if url_path.startswith(API_PATHS):
            raise HTTPException(404, f"no route {url_path}")
        index = root / "index.html"
        if not index.is_file():
            return HTMLResponse(MISSING.format(folder=root), status_code=503)
        if path:
            wanted = (root / path).resolve()
            if wanted.is_relative_to(root) and wanted.is_file():
                # Vite's hashed assets never change under the same name.
                immutable = path.startswith("assets/")
                cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
                return FileResponse(wanted, headers={"Cache-Control": cache})
            if path.startswith("assets/"):
                raise HTTPException(404, f"no dashboard file {path}")
        return FileResponse(index, headers={"Cache-Control": "no-cache"})
