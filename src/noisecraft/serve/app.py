"""The FastAPI app: pages and assets shipped in the package (no CDN: it works offline, the API docs too), the HTTP
API, a cap on request bodies, and UserErrors answered 422 with their message."""
from __future__ import annotations

import asyncio
import ipaddress
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from noisecraft.errors import UserError
from noisecraft.serve.api_generate import router as generate_router
from noisecraft.serve.api_grid import router as grid_router
from noisecraft.serve.api_runs import router as runs_router
from noisecraft.serve.service import ServeConfig, Service
from noisecraft.serve.training import Conflict

STATIC = Path(__file__).parent / "static"
# The page loads only its own scripts, styles and images; previews arrive as data: URLs.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` (or a path's own limit in `paths`) is answered 422 before
    the app sees it. The body is read here (chunked uploads have no Content-Length to trust) and replayed."""

    def __init__(self, app, max_bytes: int, paths: dict[str, int] | None = None):
        self.app, self.max_bytes, self.paths = app, max_bytes, dict(paths or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope["path"], self.max_bytes)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                response = JSONResponse({"detail": f"request body over the limit of {limit} bytes"}, 422)
                return await response(scope, receive, send)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to go away, as the server would

        return await self.app(scope, replay, send)


class SecurityHeaders:
    """ASGI middleware: nosniff on every response, and the page's CSP on ours (pure ASGI, so event streams pass
    through unbuffered and see the client go away)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = not scope["path"].startswith("/docs")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if page and any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(cfg: ServeConfig) -> FastAPI:
    svc = Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.queue.start(asyncio.get_running_loop())
        yield
        svc.queue.stop()
        await asyncio.to_thread(svc.training.shutdown)

    app = FastAPIOffline(title="noisecraft", summary="Sample diffusion models with a live preview; follow, compare "
                         "and start training runs.", lifespan=lifespan, static_url="/static/docs")
    app.state.service = svc
    for router in (generate_router, grid_router, runs_router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    for path in PAGES:  # each page put together once, when the app is made
        app.get(path, include_in_schema=False)(_page_route(_page_html(path)))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, which fails to encode for NaN (a 500): field and reason only
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409 if isinstance(exc, Conflict) else 422)

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=cfg.limits.max_body, paths={"/api/edit": cfg.limits.max_edit_body})
    return app


# The web app's pages: path -> (its <main> in static/, its name in the navigation bar and title, its script), in the
# bar's order. Each is written into static/shell.html, which holds what every page shares (head, header, bar).
PAGES = {"/": ("index.html", "Generate", "generate.js"), "/edit": ("edit.html", "Edit", "edit.js"),
         "/grid": ("grid.html", "Grid", "grid.js"), "/runs": ("runs.html", "Runs", "runs.js")}


def _page_route(html: str):
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})
    return page


def _page_html(path: str) -> str:
    """The page at `path`: its <main> in the shared shell, its own link in the navigation bar marked active."""
    main, label, script = PAGES[path]
    active = ' class="active"'
    links = "".join(f'<a href="{p}"{active if p == path else ""}>{name}</a>' for p, (_, name, _) in PAGES.items())
    parts = {"title": label.lower(), "script": script, "nav": f'<nav>{links}<a href="/docs">API</a></nav>',
             "main": (STATIC / main).read_text().rstrip("\n")}
    html = (STATIC / "shell.html").read_text()
    for marker, text in parts.items():
        html = html.replace(f"<!-- {marker} -->", text)
    return html


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(cfg: ServeConfig) -> None:
    """Run the server until Ctrl-C (which also stops, with a checkpoint, the trainings it started)."""
    import uvicorn

    if not is_loopback(cfg.host):
        warnings.warn(f"serving on {cfg.host}: anyone who can reach port {cfg.port} can sample, and start and stop "
                      f"training, with no login; bind 127.0.0.1 (the default) unless that is what you want",
                      stacklevel=2)
    app = create_app(cfg)
    print(f"noisecraft: serving {app.state.service.runs_root} at http://{cfg.host}:{cfg.port}  (API docs: /docs)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
