"""Client callbacks: the signed POST of a verification to its client's URL, and where it may go.

Where: public addresses only, unless configured otherwise.

A callback URL is the client's choice, so it is a server-side request forgery risk: the check
happens at start (the URL's host), and again on the connection itself, through a resolver that
drops every non-public address, so a DNS answer that changes between the two (rebinding) or a
redirect (callbacks never follow one) cannot reach the service's own network.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from machines.vocabulary import Status
from service import signing
from service.crypto import Secrets
from service.errors import PermanentFailureError
from service.settings import Settings

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address in any notation a resolver accepts (127.1, 2130706433, 0x7f000001, …)."""
    name = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    try:  # the legacy IPv4 forms inet_aton reads: short, decimal, hex and octal
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def is_private_address(host: str) -> bool:
    """Anything but a public address: loopback, private, link-local, shared (CGNAT), reserved, or
    a localhost name. IPv4 inside IPv6 (mapped, NAT64) is judged as the IPv4 address."""
    address = parse_address(host)
    if address is None:
        name = host.strip("[]").lower().rstrip(".")
        return name in {"localhost", "localhost.localdomain"} or name.endswith(".localhost")
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return not address.is_global


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then drops every non-public address."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        public = [answer for answer in answers if not is_private_address(answer["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address")
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
        url = str(payload["url"])
        host = urlsplit(url).hostname or ""
        # An address in the URL is checked here; a name, by the session's resolver on connecting.
        if not self.settings.allow_private_callbacks and is_private_address(host):
            msg = "callback host is a private address"
            raise PermanentFailureError(msg)
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
        async with self.http.post(url, data=body, headers=headers, timeout=timeout,
                                  allow_redirects=False) as resp:
            if not 200 <= resp.status < 300:  # noqa: PLR2004
                msg = f"callback answered {resp.status}"
                raise RuntimeError(msg)

    async def close(self) -> None:
        await self.http.close()
