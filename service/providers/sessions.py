"""One pooled, keep-alive HTTP client session per provider.

Each provider has its own connection pool: concurrent calls to one provider reuse that
provider's open connections, and a provider that answers slowly fills only its own pool, so it
cannot take the connections another provider's calls need.
"""

from __future__ import annotations

from typing import Final

import aiohttp

from service.providers.config import ROLES

# The provider ids a session can be asked for: every provider some role can name.
PROVIDER_IDS: Final = frozenset(provider for allowed in ROLES.values() for provider in allowed if provider)

# At most this many open connections to one provider. A call beyond it waits for a free
# connection, and that wait counts against the call's own timeout (provider_timeout_s), so a
# provider that stops answering turns into ProviderErrors rather than an unbounded pile of
# sockets. 100 is aiohttp's default for a whole session, now per provider.
CONNECTIONS_PER_PROVIDER: Final = 100
# How long an idle connection stays open for the next call. Longer than aiohttp's 15 s so the
# pool stays warm between bursts of verifications; shorter than the 60 s idle timeout of common
# load balancers (AWS's, for one), so the pool drops an idle connection before the far side does
# (a call on a connection the server has just closed fails).
KEEPALIVE_TIMEOUT_S: Final = 30.0


class ProviderSessions:
    """Hands out each provider's session, made on first use and the same one after."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def for_provider(self, provider: str) -> aiohttp.ClientSession:
        if provider not in PROVIDER_IDS:  # a misspelt id would quietly get a pool of its own
            msg = f"no provider {provider!r}: one of {', '.join(sorted(PROVIDER_IDS))}"
            raise ValueError(msg)
        session = self._sessions.get(provider)
        if session is None:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS_PER_PROVIDER,
                                             keepalive_timeout=KEEPALIVE_TIMEOUT_S)
            session = aiohttp.ClientSession(connector=connector)
            self._sessions[provider] = session
        return session

    async def close(self) -> None:
        """Close every session made so far (and with it its connections)."""
        for session in self._sessions.values():
            await session.close()
