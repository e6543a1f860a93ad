"""Malformed HTTP answered with the error envelope.

aiohttp refuses a request it cannot parse (a header line or field over `max_line_size` /
`max_field_size`, too many headers, a bad request line) before routing, so no middleware sees it,
and its `RequestHandler.handle_error` answers text/plain. The runner here answers the JSON envelope instead:
400 `3001` naming what was wrong (logged as one JSON line, without aiohttp's traceback: the
client's fault), or 500 `9999` (aiohttp logs the traceback); the connection is closed.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from machines.vocabulary import Code
from service.api.envelope import render
from service.catalog import Catalog
from service.errors import ApiError

SERVER_ERROR = 500
log = structlog.get_logger("veriflow.http")


class EnvelopedRequestHandler(RequestHandler):
    __slots__ = ("_catalog",)

    def __init__(self, manager: web.Server, catalog: Catalog, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._catalog = catalog

    def handle_error(self, request: BaseRequest, status: int = SERVER_ERROR, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= SERVER_ERROR:
            super().handle_error(request, status, exc, message)  # the traceback; refuses once a response began
            error = ApiError(Code.INTERNAL_ERROR, http_status=status)
        else:
            if request.writer.output_size > 0:
                msg = "a response was already sent; the error cannot be answered"
                raise ConnectionError(msg)
            # The client's fault, not the server's: one line (JSON, as every line), no traceback.
            reason = str(getattr(exc, "message", "") or message or "malformed HTTP request").splitlines()[0][:200]
            log.warning("http.malformed_request", status=status, reason=reason)
            error = ApiError(Code.INVALID_REQUEST, http_status=status, description=reason)
        response = render(error, self._catalog, request.headers.get("Accept-Language"))
        response.force_close()
        return response


class EnvelopedServer(web.Server):
    catalog: Catalog

    def __call__(self) -> RequestHandler:
        return EnvelopedRequestHandler(self, self.catalog, loop=self._loop, **self._kwargs)


class EnvelopedRunner(web.AppRunner):
    """An AppRunner whose connections answer malformed HTTP with the envelope."""

    def __init__(self, app: web.Application, catalog: Catalog, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._catalog = catalog

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = EnvelopedServer  # the same server, building enveloping connections
        assert isinstance(server, EnvelopedServer)  # noqa: S101 - for the type checker
        server.catalog = self._catalog
        return server
