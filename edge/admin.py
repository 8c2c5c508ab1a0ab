"""The admin API under ``/_admin/``: purge, drain, metrics.

Every call needs the configured token, as ``Authorization: Bearer
TOKEN`` or ``X-Admin-Token: TOKEN``; with no token configured the API
answers 404 as if absent. Purges take effect for every later request
and also stop fills in flight for the purged keys from being kept.

    POST /_admin/purge?url=http://cdn.example.com/a.css   one URL
    POST /_admin/purge?prefix=http://cdn.example.com/img/  a path prefix
    POST /_admin/purge?site=cdn.example.com                 a whole site
    POST /_admin/purge  {"url": "..."} (application/json)   the same

How purge URLs are read and normalised: ``edge.purge``.
    POST /_admin/drain?on=1  |  POST /_admin/drain?on=0
    GET  /_admin/metrics                                    Prometheus text
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Callable, Protocol
from aiohttp import web

from edge import purge, respond
from edge.config import EdgeConfig
from edge.errors import PurgeRequestError

log = logging.getLogger("edge.admin")

PREFIX = "/_admin/"


class AdminTarget(Protocol):
    """What the admin API acts on (the Edge)."""

    config: EdgeConfig
    draining: bool

    def purge(self, match: Callable[[str], bool]) -> int: ...

    def render_metrics(self) -> str: ...


def is_authorized(request: web.BaseRequest, token: str) -> bool:
    """Compare the presented token in constant time."""
    presented = request.headers.get("X-Admin-Token", "")
    bearer = request.headers.get("Authorization", "")
    if bearer.lower().startswith("bearer "):
        presented = bearer[7:].strip()

    return bool(token) and hmac.compare_digest(presented.encode(), token.encode())


def _json(status: int, body: dict[str, object]) -> web.Response:
    return respond.Response(
        status=status, text=json.dumps(body), content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Cache": "BYPASS"},
    )


async def handle(request: web.BaseRequest, edge: AdminTarget) -> web.Response:
    """Answer one admin request."""
    token = edge.config.server.admin_token
    if not token:
        return _json(404, {"error": "admin API disabled"})
    if not is_authorized(request, token):
        return _json(401, {"error": "missing or wrong admin token"})
    action = request.path[len(PREFIX):]
    if action == "metrics" and request.method == "GET":
        return respond.Response(
            text=edge.render_metrics(), content_type="text/plain",
            headers={"X-Cache": "BYPASS"},
        )
    if request.method != "POST":
        return _json(405, {"error": "use POST"})
    if action == "purge":
        return await _purge(request, edge)
    if action == "drain":
        edge.draining = request.query.get("on", "1") not in ("0", "false", "off")
        log.info("draining=%s set by admin API", edge.draining)
        return _json(200, {"draining": edge.draining})

    return _json(404, {"error": f"unknown admin action {action!r}"})


async def _purge(request: web.BaseRequest, edge: AdminTarget) -> web.Response:
    try:
        if request.content_type == "application/json":
            params = purge.parse_json(await request.read())
        else:
            params = purge.parse_query(request.raw_path)
        order = purge.find_purge(edge.config, params)
    except PurgeRequestError as exc:
        return _json(400, {"error": str(exc)})
    count = edge.purge(order.matcher())
    log.info("purge count=%d %s=%s", count, order.kind, order.shown)

    return _json(200, {"purged": count, order.kind: order.shown})
