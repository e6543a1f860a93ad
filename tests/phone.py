"""Helpers for ARS and PASS tests: start, let the outbox reach the simulator, read what it saw."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Api, start_body


async def start(api: Api, channel: str, phone: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    status, body = await api.call("POST", "/v1/verifications", start_body(phone, channel=channel, **extra))
    return status, dict(body)


async def sim_items(api: Api, channel: str, phone: str, count: int = 1) -> list[dict[str, Any]]:
    """The simulator's calls (ars) or pushes (pass) for `phone`, once the outbox delivered `count`."""
    key = {"ars": "calls", "pass": "pushes"}[channel]
    items: list[dict[str, Any]] = []
    for _ in range(300):
        await api.rt.dispatcher.read_once(block_ms=1)
        status, body = await api.call("GET", f"/sim/{channel}/{phone}", key=None)
        assert status == 200
        items = list(body[key])
        if len(items) >= count:
            return items
        await asyncio.sleep(0.01)
    msg = f"the simulator saw {len(items)} {key} for {phone}, expected {count}"
    raise AssertionError(msg)


async def read(api: Api, verification_id: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/v1/verifications/{verification_id}")
    assert status == 200, body
    return dict(body)


async def flush_outbox(api: Api) -> None:
    """Perform whatever effects are committed (calls, pushes, SMS) until none are left."""
    for _ in range(50):
        if await api.rt.dispatcher.read_once(block_ms=1) == 0:
            return
