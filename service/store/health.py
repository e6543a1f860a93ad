"""What a store fault is, and waiting for the store at start-up.

A store fault is any error that says the store cannot answer now: the connection is refused,
reset or timed out, the server is still loading its data, or a cluster slot has no primary
(failing over). Every caller recognises them here, in one place: the API answers them 503 `9999`
with `Retry-After` (`service.api.middleware`), the loops back off (`service.backoff`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from redis.exceptions import (
    ClusterError,
    ConnectionError,  # noqa: A004 - redis' own, a subclass of RedisError
    ReadOnlyError,
    RedisClusterException,
    TimeoutError,  # noqa: A004 - redis' own, a subclass of RedisError
    TryAgainError,
)

from service.errors import StoreUnavailableError
from service.store.client import StoreOptions, connect, redact

# ConnectionError covers BusyLoadingError (the server is loading its AOF or RDB) and a refused,
# reset or closed connection; ClusterError covers CLUSTERDOWN and MASTERDOWN; READONLY is a
# demoted primary, TRYAGAIN a slot being moved; RedisClusterException: no node could be reached.
STORE_FAULTS: tuple[type[Exception], ...] = (
    ConnectionError, TimeoutError, ClusterError, ReadOnlyError, TryAgainError, RedisClusterException,
)
RETRY_AFTER_S = 1  # what a 503 for a store fault tells the client to wait


def is_store_fault(exc: BaseException) -> bool:
    return isinstance(exc, (StoreUnavailableError, *STORE_FAULTS))


def store_fault(exc: BaseException) -> StoreUnavailableError | None:
    """The service's error for a store fault, or None when `exc` is something else."""
    if isinstance(exc, StoreUnavailableError):
        return exc
    if isinstance(exc, STORE_FAULTS):
        return StoreUnavailableError(f"the store is unavailable ({describe(exc)})")
    return None


def describe(exc: BaseException) -> str:
    """One short line for a log: the error's class and the first words of its message."""
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def ping(client: Any) -> None:
    """Raise the store's error unless it answers PING."""
    if not await client.ping():
        msg = "PING was not answered"
        raise ConnectionError(msg)


async def wait_for_store(url: str, options: StoreOptions, timeout_s: float, *, interval_s: float = 0.25) -> bool:
    """At start-up: until the store at `url` answers, for up to `timeout_s`. Says once on stderr
    that it waits, and once why it gives up. True when the store answered."""
    client, _ = connect(url, options)
    deadline = time.monotonic() + timeout_s
    waiting = False
    try:
        while True:
            try:
                await ping(client)
            except Exception as exc:  # noqa: BLE001 - any failure to answer is waited out
                if time.monotonic() >= deadline:
                    _say(f"the store is unreachable: {redact(url)} did not answer within {timeout_s:g} s "
                         f"({describe(exc)})")
                    return False
                if not waiting:
                    waiting = True
                    _say(f"waiting for the store at {redact(url)} (up to {timeout_s:g} s): {describe(exc)}")
                await asyncio.sleep(interval_s)
            else:
                if waiting:
                    _say(f"the store at {redact(url)} answers")
                return True
    finally:
        await client.aclose()


def _say(line: str) -> None:
    print(f"veriflow: {line}", file=sys.stderr, flush=True)  # noqa: T201 - the operator's console
