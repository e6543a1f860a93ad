"""The error envelope of contract section 2, rendered from an ApiError and the catalog.

A client configured with a second error dialect (`clients: {<id>: {error_dialect: xsolla}}`)
gets that dialect's code in `code` where `config/error_dialects.yaml` maps the row, and always
veriflow's own in `veriflow_code`; every other field is the same. Other clients' envelopes, and
those rendered before the caller is known (401 4101), are veriflow's alone.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.api.context import CLIENT_ID, RUNTIME
from service.catalog import Catalog, pick_locale
from service.errors import ApiError
from service.jsonio import json_response


def render(error: ApiError, catalog: Catalog, accept_language: str | None,
           dialect: str | None = None) -> web.Response:
    entry = catalog.get(error.code, error.variant)
    body: dict[str, Any] = {
        "error": {
            "code": error.code,
            "detail_code": error.detail_code,
            "message": entry.message(pick_locale(accept_language), error.detail_code),
            "description": error.description or entry.description,
            "retryable": entry.retryable,
        },
    }
    if dialect is not None:
        body["error"]["code"] = catalog.dialect_code(dialect, entry)
        body["error"]["veriflow_code"] = error.code
    if error.verification is not None:
        body["verification"] = error.verification
    response = json_response(body, status=error.http_status or entry.http_status)
    response.headers.update(error.headers)
    return response


def render_for(request: web.Request, error: ApiError) -> web.Response:
    """`error` as the calling client reads it: its locale, and its dialect once it is known."""
    rt = request.app[RUNTIME]
    dialect = rt.settings.error_dialects.get(request[CLIENT_ID]) if CLIENT_ID in request else None
    return render(error, rt.catalog, request.headers.get("Accept-Language"), dialect)
