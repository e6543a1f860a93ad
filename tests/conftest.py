"""Shared fixtures: a real redis-server for the session, fakeredis, and a running API.

`store_client` runs a test on fakeredis and again on the real redis-server when the store's
behaviour is what it checks: every test that does not go through HTTP (store, transactor,
timers, outbox), every HTTP test of the modules in `BOTH_STORES` and every test that sends
concurrent requests. The other HTTP tests check the API's answers and run on fakeredis only.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service import settings as settings_module
from service.api.app import build_app
from service.clock import ManualClock
from service.providers.simulator import SimulatorClient
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from service.simulator.app import SIMULATOR
from service.store.client import StoreInfo, connect

API_KEY = "test-key-0001"
OTHER_KEY = "test-key-0002"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, with AOF, for the whole test session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run the README's test command (scripts/test)")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


BOTH_STORES = {"test_timers", "test_webhooks", "test_workers", "test_tx_id", "test_processes", "test_security",
               "test_record_cache"}


def runs_on_both_stores(metafunc: pytest.Metafunc) -> bool:
    if "api" not in metafunc.fixturenames or metafunc.module.__name__.rpartition(".")[2] in BOTH_STORES:
        return True
    return "asyncio.gather" in inspect.getsource(metafunc.function)  # races: atomicity is the point


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        metafunc.parametrize("store_kind", ["fake", "real"] if runs_on_both_stores(metafunc) else ["fake"])


@pytest.fixture
async def store_client(request: pytest.FixtureRequest, store_kind: str) -> AsyncIterator[Any]:
    """A Redis client, fakeredis or the real server (flushed), for tests of store behaviour; on the
    real server, the service's own (its step commands take the lane)."""
    if store_kind == "fake":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        client, _ = connect(request.getfixturevalue("redis_server"))  # the service's own client
        await client.flushall()
    yield client
    await client.aclose()


def make_settings(**overrides: Any) -> Settings:
    env = {"VERIFLOW_API_KEYS": f"acme:{API_KEY},globex:{OTHER_KEY}",
           "VERIFLOW_SECRET_KEY": "test-secret-key", "VERIFLOW_PROVIDER_SECRET": "test-provider-secret"}
    base = settings_module.load(env)
    return replace(base, **overrides)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=int(time.time() * 1000))


@pytest.fixture
async def runtime(request: pytest.FixtureRequest, store_client: Any, clock: ManualClock) -> AsyncIterator[Runtime]:
    """The service's parts on the test's store. `@pytest.mark.settings(name=value, …)` overrides
    settings for one test or class (callbacks to loopback are allowed unless it says otherwise)."""
    marker = request.node.get_closest_marker("settings")
    settings = make_settings(**{"allow_private_callbacks": True, **(marker.kwargs if marker else {})})
    rt = await build_runtime(settings, clock=clock, client=store_client,
                             store_info=StoreInfo("test", durable=False))
    yield rt
    await rt.provider_sessions.close()
    await rt.callbacks.close()


class Api:
    """A client of the running test server, with the API key of one tenant."""

    def __init__(self, session: aiohttp.ClientSession, base: str, rt: Runtime, app: web.Application) -> None:
        self.session = session
        self.base = base
        self.rt = rt
        self.app = app

    async def call(self, method: str, path: str, body: Any = None, *, key: str | None = API_KEY,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        async with self.session.request(method, self.base + path, json=body, headers=sent) as resp:
            return resp.status, await resp.json(content_type=None)

    async def start(self, phone: str = "01012345678", **extra: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/v1/verifications", start_body(phone, **extra))
        assert status == 201, body
        return dict(body)

    async def inbox(self, phone: str) -> list[dict[str, Any]]:
        """The SMS the simulator received for `phone`, after the outbox has delivered them."""
        for _ in range(200):
            await self.rt.dispatcher.read_once(block_ms=1)
            status, body = await self.call("GET", f"/sim/sms?phone={phone}", key=None)
            assert status == 200
            if body["messages"]:
                return list(body["messages"])
            await asyncio.sleep(0.01)
        return []

    async def latest_code(self, phone: str, count: int = 1) -> str:
        for _ in range(200):
            messages = await self.inbox(phone)
            if len(messages) >= count:
                return str(messages[-1]["code"])
            await asyncio.sleep(0.01)
        msg = f"no SMS number {count} for {phone}"
        raise AssertionError(msg)


def start_body(phone: str = "01012345678", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "sms",
        "subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1", "phone": phone,
                    "carrier": "SKT"},
        **extra,
    }


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[Api]:
    """The real aiohttp application on a loopback port, with the simulator mounted."""
    app = build_app(runtime, simulator=True)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    simulator = runtime.providers.sms
    assert isinstance(simulator, SimulatorClient)
    simulator.base_url = base + "/sim"
    app[SIMULATOR].phone_apps.webhook = base + "/v1/providers/simulator/events"
    await runtime.dispatcher.ensure_groups()
    async with aiohttp.ClientSession() as session:
        yield Api(session, base, runtime, app)
    await server.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VERIFLOW_REDIS_URL", None)
    env.pop("VERIFLOW_CONFIG", None)
    return env


def without_token(raw: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A stored hash without the `_c` field, the token of the commit that last wrote it."""
    return {name: value for name, value in raw.items() if name != b"_c"}
