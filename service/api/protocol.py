"""Malformed HTTP answered with the error envelope.

aiohttp refuses a request it cannot parse (a header line or field over `max_line_size` /
`max_field_size`, too many headers, a bad request line) before routing, so no middleware sees it,
and its `RequestHandler.handle_error` answers text/plain. The runner here keeps aiohttp's handling
(the log line, the closed connection) and answers the JSON envelope instead: 400 `3001` naming
what was wrong, or 500 `9999`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from machines.vocabulary import Code
from service.api.envelope import render
from service.catalog import Catalog
from service.errors import ApiError

SERVER_ERROR = 500


class EnvelopedRequestHandler(RequestHandler):
    __slots__ = ("_catalog",)

    def __init__(self, manager: web.Server, catalog: Catalog, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._catalog = catalog

    def handle_error(self, request: BaseRequest, status: int = SERVER_ERROR, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it, and refuses once a response began
        if status >= SERVER_ERROR:
            error = ApiError(Code.INTERNAL_ERROR, http_status=status)
        else:
            reason = str(getattr(exc, "message", "") or message or "malformed HTTP request").splitlines()[0]
            error = ApiError(Code.INVALID_REQUEST, http_status=status, description=reason[:200])
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
