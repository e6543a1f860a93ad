"""Client callbacks: the signed POST of a verification to its client's URL, and where it may go.

Where: public addresses only, unless configured otherwise.

A callback URL is the client's choice, so it is a server-side request forgery risk: the check
happens at start and before each delivery (`callback_address.check_callback_url`: the host as
the HTTP client will read it), and again on the connection itself, through a resolver that
drops every non-public address, so a DNS answer that changes between the two (rebinding) or a
redirect (callbacks never follow one) cannot reach the service's own network. A URL that can
never be delivered (refused by the check, or a name with no public address) is dropped at once.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from machines.vocabulary import Status
from service import signing
from service.crypto import Secrets
from service.effects.callback_address import UndeliverableUrlError, check_callback_url, public_answers
from service.errors import PermanentFailureError
from service.settings import Settings


class NoPublicAddressError(OSError):
    """A callback host that resolves to no public address: it will never be delivered."""


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then drops every non-public address (by the
    same rule as the check at start: `callback_address.public_answers`)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        public = public_answers(answers)
        if not public:
            raise NoPublicAddressError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._resolver.close()


def callback_session(*, allow_private: bool) -> aiohttp.ClientSession:
    """The HTTP client for callbacks: public addresses only, unless private networks are allowed."""
    connector: Any = aiohttp.TCPConnector(resolver=PublicOnlyResolver()) if not allow_private else None
    return aiohttp.ClientSession(connector=connector)


class Callbacks:
    """The `notify` handler: POST `{"event_id", "type", "verification"}`, signed with the client's key."""

    def __init__(self, settings: Settings, secrets: Secrets, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.secrets = secrets
        self.http = http

    async def notify(self, payload: dict[str, Any]) -> None:
        try:
            # Checked again as the client will call it (a URL kept before this rule, a setting
            # changed since); an address literal is judged here, a name by the session's resolver.
            url = check_callback_url(str(payload["url"]), allow_private=self.settings.allow_private_callbacks)
        except UndeliverableUrlError as exc:
            msg = f"callback URL cannot be called: {exc}"
            raise PermanentFailureError(msg) from None
        view = payload["view"]
        if view["status"] == Status.VERIFIED and payload.get("verified_at"):
            view["key_token"] = self.secrets.key_token(view["id"], int(payload["verified_at"]))
        event_id = f"{view['id']}.{payload['version']}"
        body = orjson.dumps({
            "event_id": event_id,
            "type": "verification.updated",
            "verification": view,
        })
        secret = self.settings.api_keys.get(str(payload["client"]))
        if secret is None:
            msg = "the client no longer exists"
            raise PermanentFailureError(msg)
        headers = {
            "Content-Type": "application/json",
            signing.HEADER: signing.sign(secret, body, int(time.time())),
            # the same for every delivery of this event: a receiver can de-duplicate on it
            "Idempotency-Key": event_id,
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.callback_timeout_s)
        # Never follow a redirect: it could lead anywhere, the service's own network included.
        try:
            async with self.http.post(url, data=body, headers=headers, timeout=timeout,
                                      allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:  # noqa: PLR2004
                    msg = f"callback answered {resp.status}"
                    raise RuntimeError(msg)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, NoPublicAddressError):
                # Every address the name has is private: dropped now, not retried for a day.
                raise PermanentFailureError(str(exc.os_error)) from None
            raise

    async def close(self) -> None:
        await self.http.close()
