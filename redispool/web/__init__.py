"""The web view of redispool's pools (the optional extra ``redispool[web]``).

* :func:`create_app` returns the ASGI app (Starlette) to serve or to mount in
  a service of your own;
* :func:`wsgi_app` the same app as a WSGI callable (through ``a2wsgi``), to
  mount in Flask or Django;
* :func:`serve` runs it with uvicorn, as ``redispool web`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..connect import Client
from .app import CSP, LOOPBACK_HOSTS, create_app

__all__ = ["CSP", "LOOPBACK_HOSTS", "create_app", "serve", "wsgi_app"]


def wsgi_app(client: Client, **options: Any) -> Any:
    """:func:`create_app` as a WSGI application (same options)."""
    from a2wsgi import ASGIMiddleware

    return ASGIMiddleware(create_app(client, **options))  # type: ignore[arg-type]


def serve(
    client: Client, *, host: str = "127.0.0.1", port: int = 8080,
    pools: Iterable[str] | None = None, allow_actions: bool = False, token: str | None = None,
) -> None:  # fmt: skip
    """Serve the web view on ``host:port`` until interrupted (loopback by default)."""
    import uvicorn

    hosts = [*LOOPBACK_HOSTS, host] if host not in ("0.0.0.0", "::") else ["*"]
    app = create_app(client, pools=pools, allow_actions=allow_actions, token=token,
                     allowed_hosts=hosts)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
