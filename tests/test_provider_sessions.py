"""Each provider's own pooled, keep-alive HTTP session: one per provider id, the connector's cap
and keep-alive as configured, connections reused across concurrent calls (counted by a real
server on loopback), one saturated provider not holding up another, and every session closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.providers.config import PORTONE, SIMULATOR, TWILIO
from service.providers.portone import PortOneProvider
from service.providers.sessions import (
    CONNECTIONS_PER_PROVIDER,
    KEEPALIVE_TIMEOUT_S,
    PROVIDER_IDS,
    ProviderSessions,
)
from service.providers.simulator import SimulatorClient
from service.providers.twilio import TwilioSmsGateway
from service.providers.wiring import build_providers
from service.runtime import build_runtime
from service.settings import ConfigError
from service.store.client import StoreInfo
from tests.conftest import free_port, make_settings
from tests.stubs.twilio_stub import TwilioStub
from tests.test_provider_wiring import load

ALL_PROVIDERS = (SIMULATOR, PORTONE, TWILIO)
CONCURRENT_CALLS = 2 * CONNECTIONS_PER_PROVIDER  # more calls at once than one pool may open


@pytest.fixture
async def sessions() -> AsyncIterator[ProviderSessions]:
    made = ProviderSessions()
    yield made
    await made.close()


class ProviderRoutes:
    """A stand-in for the simulator's provider routes: it counts the TCP connections calls arrive
    on (by the client's address and port) and the most requests it held at once. A handler waits
    until `release` is set, so calls overlap however fast the loop runs them."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections: set[tuple[str, int]] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()

    async def answer(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        host, port = request.transport.get_extra_info("peername")[:2]
        self.connections.add((host, port))
        self.requests += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.json_response({})  # no refusal

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/sim/provider/addons", self.answer), web.post("/sim/provider/sms", self.answer)])
        return app


@pytest.fixture
async def routes() -> AsyncIterator[tuple[ProviderRoutes, str]]:
    """The stand-in, served on loopback; yields it and the simulator URL to give the wiring."""
    stand_in = ProviderRoutes()
    server = TestServer(stand_in.app(), host="127.0.0.1", port=free_port())
    await server.start_server()
    yield stand_in, str(server.make_url("/sim"))
    stand_in.release.set()
    await server.close()


async def once_all_waiting(stand_in: ProviderRoutes, calls: list[Awaitable[Any]]) -> list[Any]:
    """Run `calls` at once; release the server when no more of them can reach it (the pool's
    cap is the most that can), so the rest have to wait for a connection to come free."""
    running = asyncio.gather(*calls)
    for _ in range(500):
        if stand_in.in_flight >= min(len(calls), CONNECTIONS_PER_PROVIDER):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # a pool without the cap would let the others in by now
    stand_in.release.set()
    return list(await asyncio.wait_for(running, 30))


class TestOneSessionPerProvider:
    async def test_each_provider_has_its_own_session_the_same_every_time(self, sessions):
        first = {provider: sessions.for_provider(provider) for provider in ALL_PROVIDERS}
        assert {provider: sessions.for_provider(provider) for provider in ALL_PROVIDERS} == first
        assert all(sessions.for_provider(p) is first[p] for p in ALL_PROVIDERS)
        assert len({id(session) for session in first.values()}) == len(ALL_PROVIDERS)
        assert len({id(session.connector) for session in first.values()}) == len(ALL_PROVIDERS)

    async def test_the_connector_caps_connections_and_keeps_them_alive(self, sessions):
        for provider in ALL_PROVIDERS:
            connector = sessions.for_provider(provider).connector
            assert isinstance(connector, aiohttp.TCPConnector)
            assert connector.limit == CONNECTIONS_PER_PROVIDER == 100
            assert connector.limit_per_host == 0, "the cap is the provider's, whatever host it calls"
            assert not connector.force_close
            assert connector._keepalive_timeout == KEEPALIVE_TIMEOUT_S == 30.0

    async def test_the_known_ids_are_the_configured_providers(self, sessions):
        assert frozenset(ALL_PROVIDERS) == PROVIDER_IDS
        with pytest.raises(ValueError, match="no provider 'twillio'"):
            sessions.for_provider("twillio")

    async def test_close_closes_every_session(self):
        sessions = ProviderSessions()
        made = [sessions.for_provider(provider) for provider in ALL_PROVIDERS]
        await sessions.close()
        assert all(session.closed for session in made)
        assert all(session.connector is None or session.connector.closed for session in made)


class TestWiring:
    async def test_each_adapter_gets_its_providers_session(self, tmp_path, sessions):
        settings = load(tmp_path, {"sms": "twilio", "sms_upstream": "portone",
                                   "twilio": {"from_number": "+15005550006"}})
        providers = build_providers(settings, sessions, None)
        simulator, sms, upstream = providers.carriers, providers.sms, providers.code_upstream
        assert isinstance(simulator, SimulatorClient)
        assert providers.calls is simulator
        assert providers.pushes is simulator
        assert simulator.session is sessions.for_provider(SIMULATOR)
        assert isinstance(sms, TwilioSmsGateway)
        assert sms.session is sessions.for_provider(TWILIO)
        assert isinstance(upstream, PortOneProvider)
        assert upstream.session is sessions.for_provider(PORTONE)

    async def test_runtime_close_closes_every_providers_session(self, tmp_path, clock):
        settings = load(tmp_path, {"sms": "twilio", "sms_upstream": "portone",
                                   "twilio": {"from_number": "+15005550006"}})
        rt = await build_runtime(settings, clock=clock, client=fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()),
                                 store_info=StoreInfo("test", durable=False))
        made = [rt.provider_sessions.for_provider(provider) for provider in ALL_PROVIDERS]
        assert not any(session.closed for session in made)
        await rt.close()
        assert all(session.closed for session in made)

    async def test_a_configuration_error_closes_the_sessions_made(self, tmp_path, clock, monkeypatch):
        made: list[ProviderSessions] = []

        class Recorded(ProviderSessions):
            def __init__(self) -> None:
                super().__init__()
                made.append(self)

        monkeypatch.setattr("service.runtime.ProviderSessions", Recorded)
        settings = load(tmp_path, {"sms_upstream": "portone"}, VERIFLOW_PORTONE_IMP_SECRET="")
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        with pytest.raises(ConfigError, match="VERIFLOW_PORTONE_IMP_SECRET"):
            await build_runtime(settings, clock=clock, client=client, store_info=StoreInfo("t", durable=False))
        await client.aclose()
        (sessions,) = made
        opened = sessions._sessions
        assert set(opened) == {SIMULATOR, PORTONE}, "both made before the missing secret was noticed"
        assert all(session.closed for session in opened.values())


class TestConnectionPool:
    async def test_concurrent_calls_share_the_providers_connections(self, routes, sessions):
        """200 calls at once through the simulator's client, half as carrier checks and half as SMS
        (one client, one pool): at most the cap of connections, each carrying several calls."""
        stand_in, simulator_url = routes
        providers = build_providers(make_settings(), sessions, simulator_url)

        def call(n: int) -> Awaitable[Any]:
            if n % 2:
                return providers.carriers.check_addons(f"ref-{n}", "01012345678")
            return providers.sms.send_sms(f"ref-{n}", "01012345678", "[veriflow] 123456")

        answers = await once_all_waiting(stand_in, [call(n) for n in range(CONCURRENT_CALLS)])
        assert answers == [None] * CONCURRENT_CALLS
        assert stand_in.requests == CONCURRENT_CALLS
        assert stand_in.most_in_flight <= CONNECTIONS_PER_PROVIDER, "the cap held the rest back"
        assert len(stand_in.connections) <= CONNECTIONS_PER_PROVIDER
        assert stand_in.requests >= 2 * len(stand_in.connections), "each connection carried several calls"

    async def test_a_saturated_provider_does_not_hold_up_another(self, routes, sessions, tmp_path):
        """Every connection of the simulator's pool is held by an unanswered call, with more
        calls waiting for one; an SMS through Twilio is sent meanwhile on Twilio's own pool."""
        stand_in, simulator_url = routes
        async with TwilioStub() as twilio:
            settings = load(tmp_path, {"sms": "twilio", "twilio": {"base_url": twilio.base_url,
                                                                   "from_number": "+15005550006"}})
            providers = build_providers(settings, sessions, simulator_url)
            stuck = asyncio.gather(*(providers.carriers.check_addons(f"ref-{n}", "01012345678")
                                     for n in range(CONCURRENT_CALLS)))
            for _ in range(500):
                if stand_in.in_flight == CONNECTIONS_PER_PROVIDER:
                    break
                await asyncio.sleep(0.01)
            assert stand_in.in_flight == CONNECTIONS_PER_PROVIDER, "the simulator's pool is full"
            await asyncio.wait_for(providers.sms.send_sms("ref-sms", "01012345678", "[veriflow] 123456"), 5)
            assert len(twilio.sent) == 1
            assert stand_in.in_flight == CONNECTIONS_PER_PROVIDER, "still full: nothing was freed for it"
            stand_in.release.set()
            assert await asyncio.wait_for(stuck, 30) == [None] * CONCURRENT_CALLS
