"""The web view's ASGI app (Starlette): a page of every pool, its JSON API, actions.

``create_app(client)`` returns the app; ``redispool web`` serves it with
uvicorn, and a user's own service can mount it (``Mount("/pools",
app=create_app(r))`` in Starlette or FastAPI; :func:`redispool.web.wsgi_app`
for Flask or Django). Everything it returns is JSON or a fixed file: worker
ids, hosts and holders are data the page shows with ``textContent``, never
markup. Every response carries a content security policy that allows only
the app's own script and style, and the app answers only to the host names
it is given (loopback by default), so a page elsewhere cannot rebind a name to
it and read it.

Read-only unless ``allow_actions``: then ``POST api/pools/<P>/drain`` (body
``{"worker": "<id>"}``: out of service after its lease, as ``redispool
drain``) and ``POST api/pools/<P>/reap`` (bury the workers whose heartbeat
lapsed, now) need ``Authorization: Bearer <token>`` (compared in constant time); each
action done is logged in the pool's event log.
"""

from __future__ import annotations

import hmac
import logging
import time as mod_time
from collections.abc import Iterable
from importlib import resources
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import events, liveness
from ..connect import Client
from ..discovery import find_pools
from ..errors import PoolError
from ..history import WINDOW
from ..keys import validate_pool_name, validate_worker_id
from ..pool import Pool
from .snapshot import pool_summary, read_pool

__all__ = ["CSP", "LOOPBACK_HOSTS", "create_app"]

log = logging.getLogger("redispool.web")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
#: Seconds a SCAN's list of pools is reused (the page asks every second; a new
#: pool shows within the 2 s of a live update).
POOLS_TTL = 1.5
#: The shortest operator token accepted.
MIN_TOKEN = 16


class SecurityHeaders:
    """ASGI middleware: the security headers above on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _static(name: str) -> bytes:
    return resources.files("redispool.web").joinpath("static").joinpath(name).read_bytes()


class _View:
    """The endpoints, sharing one client and one Pool per name."""

    def __init__(self, client: Client, pools: Iterable[str] | None,
                 allow_actions: bool, token: str | None) -> None:  # fmt: skip
        self.client = client
        self.names = None if pools is None else sorted({validate_pool_name(p) for p in pools})
        self.allow_actions = allow_actions
        self.token = token
        self._pools: dict[str, Pool] = {}
        self._found: list[str] = []
        self._found_until = 0.0
        self.files = {name: _static(name) for name in STATIC}

    def pool(self, name: str) -> Pool | None:
        try:
            validate_pool_name(name)
        except ValueError:
            return None
        if self.names is not None and name not in self.names:
            return None
        found = self._pools.get(name)
        candidate = found or Pool(name, redis=self.client)
        # asked at every request: a pool deleted since is a 404, not a page of zeros
        if not candidate.client.exists(candidate.keys.config, candidate.keys.workers):
            if self._pools.get(name) is candidate:
                del self._pools[name]
            candidate.close()
            return None
        return found or self._pools.setdefault(name, candidate)

    def pool_names(self) -> list[str]:
        """The pools shown; found by a SCAN at most every POOLS_TTL seconds."""

        if self.names is not None:
            return self.names
        now = mod_time.monotonic()
        if now >= self._found_until:
            self._found = find_pools(self.client, ("workers", "config"))
            self._found_until = now + POOLS_TTL
        return self._found

    # -- pages and reads ---------------------------------------------------------

    def index(self, request: Request) -> Response:
        if not request.url.path.endswith("/"):  # relative links need the trailing slash
            return RedirectResponse(request.url.path + "/")
        return Response(self.files["index.html"], media_type=STATIC["index.html"])

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":
            return _error(404, "no such file")
        return Response(self.files[name], media_type=STATIC[name])

    def config(self, request: Request) -> Response:
        return JSONResponse({"actions": self.allow_actions, "history_minutes": WINDOW})

    def pools(self, request: Request) -> Response:
        found = []
        for name in self.pool_names():
            pool = self.pool(name)
            if pool is None:
                continue
            try:
                found.append(pool_summary(pool))
            except PoolError as exc:  # one pool's junk does not hide every other pool
                log.warning("web: pool %s unreadable: %s", name, exc)
                found.append({"pool": name, "error": str(exc)})
        return JSONResponse(found)

    def one_pool(self, request: Request) -> Response:
        pool = self.pool(request.path_params["pool"])
        if pool is None:
            return _error(404, "no such pool")
        return JSONResponse(read_pool(pool))

    def history(self, request: Request) -> Response:
        from ..observe import history_of

        pool = self.pool(request.path_params["pool"])
        if pool is None:
            return _error(404, "no such pool")
        raw = request.query_params.get("minutes", "60")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= WINDOW:
            return _error(400, f"minutes must be a whole number from 1 to {WINDOW}")
        minutes = history_of(pool.client, pool.name).read(int(raw))
        return JSONResponse([m.to_json() for m in minutes])

    def events(self, request: Request) -> Response:
        pool = self.pool(request.path_params["pool"])
        if pool is None:
            return _error(404, "no such pool")
        raw = request.query_params.get("count", "100")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= events.MAX_EVENTS:
            return _error(400, f"count must be a whole number from 1 to {events.MAX_EVENTS}")
        return JSONResponse([e.to_json() for e in events.read(pool.client, pool.name, int(raw))])

    # -- actions -------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        if not self.allow_actions or not self.token:
            return _error(403, "actions are off: start with --allow-actions and a token")
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("action refused: wrong or missing token from %s", _peer(request))
            return _error(401, "wrong or missing operator token")
        return None

    async def action(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return _error(400, "the body must be JSON")
        worker = body.get("worker", "") if isinstance(body, dict) else None
        if not isinstance(worker, str):
            return _error(400, 'the body must be {"worker": "<id>"}')
        return await run_in_threadpool(self._act, request, worker)

    def _act(self, request: Request, worker: str) -> Response:
        pool = self.pool(request.path_params["pool"])
        if pool is None:
            return _error(404, "no such pool")
        what = request.path_params["action"]
        if what == "drain":
            try:
                validate_worker_id(worker)
            except ValueError as exc:
                return _error(400, str(exc))
            done = pool.remove_worker(worker)
            if not done:
                return _error(404, "no such worker")
            result: dict[str, Any] = {"drained": worker}
        elif what == "reap":
            result = {"buried": liveness.bury(pool)[0]}
        else:
            return _error(404, "no such action")
        events.record(pool.client, pool.name, "action", worker=worker,
                      detail=f"{what} from the web page ({_peer(request)}): {result}")  # fmt: skip
        return JSONResponse(result)


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    client: Client,
    *,
    pools: Iterable[str] | None = None,
    allow_actions: bool = False,
    token: str | None = None,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
) -> Starlette:
    """The web view of ``pools`` (None: every pool) over ``client``.

    ``allow_actions`` needs a ``token`` of at least 16 printable ASCII
    characters, what an HTTP header carries (``ValueError`` otherwise).
    ``allowed_hosts``: the Host names it answers to (``"*"`` for any, e.g. behind a
    proxy that checks them).
    """
    if allow_actions and (not token or len(token) < MIN_TOKEN):
        raise ValueError(f"actions need an operator token of at least {MIN_TOKEN} characters")
    if allow_actions and token and not (token.isascii() and token.isprintable()
                                        and token == token.strip()):  # fmt: skip
        # headers arrive as latin-1 text: such a token could never match
        raise ValueError("the operator token must be printable ASCII without spaces at its ends")
    view = _View(client, pools, allow_actions, token)
    routes = [
        Route("/", view.index),
        Route("/static/{name}", view.static),
        Route("/api/config", view.config),
        Route("/api/pools", view.pools),
        Route("/api/pools/{pool}", view.one_pool),
        Route("/api/pools/{pool}/history", view.history),
        Route("/api/pools/{pool}/events", view.events),
        Route("/api/pools/{pool}/{action}", view.action, methods=["POST"]),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        PoolError: _pool_error, redis.RedisError: _pool_error,
    })  # fmt: skip
    app.state.view = view
    return app


async def _pool_error(request: Request, exc: Exception) -> Response:
    log.warning("web request %s failed: %s", request.url.path, exc)
    return _error(503, f"Redis: {exc}")
