"""The error envelope of contract section 2, rendered from an ApiError and the catalog."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.catalog import Catalog, pick_locale
from service.errors import ApiError
from service.jsonio import json_response


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
    response = json_response(body, status=error.http_status or entry.http_status)
    response.headers.update(error.headers)
    return response
