"""The operator dashboard at `/`: the static files of its production build (`dashboard/dist`,
made by `make setup` with `npm ci && npm run build`). The app's own paths (`/`, `/alarms`,
`/machines/{id}`: `dashboard/src/router.ts`) all answer its `index.html`, so a browser may open or
reload any of them; its hashed files are under `/assets/`. Every other path stays the API's (an
unknown one is still a 404 problem). Without a build, the app's paths say how to make one."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

from streaming.stack.local import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "dashboard" / "dist"
APP_PATHS = ("/", "/alarms", "/machines/{machine_id}")
IMMUTABLE = "public, max-age=31536000, immutable"

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
    """Add the dashboard's routes to the app."""
    root = (folder or DEFAULT_DIR).resolve()
    assets = root / "assets"

    async def page() -> Response:
        index = root / "index.html"
        if not index.is_file():
            return HTMLResponse(MISSING.format(folder=root), status_code=503)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    for path in APP_PATHS:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    @app.get("/assets/{name:path}", include_in_schema=False)
    async def asset(name: str) -> Response:
        wanted = (assets / name).resolve()
        if not (wanted.is_relative_to(assets) and wanted.is_file()):
            raise HTTPException(404, f"no dashboard file assets/{name}")
        # Vite's hashed file names never change content under the same name.
        return FileResponse(wanted, headers={"Cache-Control": IMMUTABLE})
