"""`veriflow api --workers N`: N processes serve one port, and SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import free_port
from tests.test_processes import KEY, Process, call, wait_ready

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text(encoding="ascii").split()
        found += [int(child) for child in text]
    return found


def env_for(subprocess_env: dict[str, str], redis_url: str) -> dict[str, str]:
    return {**subprocess_env, "VERIFLOW_REDIS_URL": redis_url, "VERIFLOW_API_KEYS": f"acme:{KEY}",
            "VERIFLOW_SECRET_KEY": "workers-secret-" + "0" * 20, "VERIFLOW_PROVIDER_SECRET": "workers-provider-secret"}


async def test_two_processes_share_the_port_and_stop_together(redis_server, subprocess_env, tmp_path):
    """Two API processes listen on one port and answer; SIGTERM ends both, exit 0."""
    client = aioredis.Redis.from_url(redis_server)
    await client.flushall()
    await client.aclose()
    port = free_port()
    api = Process(["api", "--workers", "2", "--port", str(port)], env_for(subprocess_env, redis_server),
                  tmp_path / "api.log")
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, api, "/readyz")
        for _ in range(100):
            if len(children_of(api.popen.pid)) == 2:
                break
            await asyncio.sleep(0.05)
        workers = children_of(api.popen.pid)
        assert len(workers) == 2, api.output()
        for _ in range(20):  # a new connection each time: the kernel spreads them over the two
            async with aiohttp.ClientSession() as session:
                status, body = await call(session, "GET", base + "/v1/verifications/" + "0" * 28, KEY)
                assert (status, body["error"]["code"]) == (404, "4001")
        for _ in range(200):  # each process says so once its port is bound and the store answers
            if api.output().count("listening on") == 2:
                break
            await asyncio.sleep(0.05)
        assert api.output().count("listening on") == 2, api.output()
        api.popen.send_signal(signal.SIGTERM)
        assert api.popen.wait(20) == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        api.stop(signal.SIGKILL)


async def test_workers_need_a_shared_store(subprocess_env, tmp_path):
    """With the embedded store every process would have its own state: refused in one line."""
    api = Process(["api", "--workers", "2", "--port", str(free_port())], subprocess_env, tmp_path / "api.log")
    assert api.popen.wait(30) == 2
    assert "--workers needs VERIFLOW_REDIS_URL" in api.output()
