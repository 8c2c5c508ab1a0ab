"""The health document the DNS router polls (fields: edge/README.md).

200 with the JSON below while serving, 503 with the same JSON (status
"draining") while draining; "overloaded" when connections reach the
self-declared capacity.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from edge import respond


def health_document(
    draining: bool, connections: int, max_connections: int,
    bytes_per_second: float, objects: int, stored_bytes: int,
) -> dict[str, Any]:
    """Return the health JSON as a dict; pure."""
    return {
        "status": "draining" if draining else "up",
        "draining": draining,
        "connections": connections,
        "max_connections": max_connections,
        "bytes_per_second": round(bytes_per_second, 1),
        "overloaded": connections >= max_connections,
        "cache": {"objects": objects, "bytes": stored_bytes},
    }


def health_response(document: dict[str, Any]) -> web.Response:
    """Return the HTTP response for a health document."""
    status = 503 if document["draining"] else 200

    return respond.Response(
        status=status,
        text=json.dumps(document),
        content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Cache": "BYPASS"},
    )
