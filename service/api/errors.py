"""One error vocabulary: an ApiError names a catalog code; the middleware renders the envelope."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from service.catalog import Catalog, pick_locale


class ApiError(Exception):
    """An answer other than success, named by its catalog code."""

    def __init__(
        self,
        code: str,
        *,
        http_status: int | None = None,
        detail_code: str | None = None,
        description: str | None = None,
        verification: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.http_status = http_status
        self.detail_code = detail_code
        self.description = description
        self.verification = verification


def invalid(description: str) -> ApiError:
    """Malformed JSON, a missing or invalid field: 400 3001, and nothing is created."""
    return ApiError("3001", description=description)


def render(error: ApiError, catalog: Catalog, accept_language: str | None) -> web.Response:
    entry = catalog.get(error.code)
    body: dict[str, Any] = {
        "error": {
            "code": error.code,
            "detail_code": error.detail_code,
            "message": entry.messages[pick_locale(accept_language)],
            "description": error.description or entry.description,
            "retryable": entry.retryable,
        },
    }
    if error.verification is not None:
        body["verification"] = error.verification
    return web.Response(body=orjson.dumps(body), status=error.http_status or entry.http_status,
                        content_type="application/json", charset="utf-8")
