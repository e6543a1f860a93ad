"""Timers and the outbox, driven step by step against fakeredis and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from machines.vocabulary import Status
from service import signing
from service.effects.callback_address import UndeliverableUrlError, check_callback_url
from service.effects.callbacks import PublicOnlyResolver
from service.store.outbox import GROUP
from tests.conftest import API_KEY, Api, free_port


async def receiver(replies: list[int]) -> tuple[TestServer, list[tuple[dict[str, str], bytes]]]:
    """A client's callback endpoint on loopback; answers the given statuses, then 200."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=replies.pop(0) if replies else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    return server, received


class TestTimers:
    async def test_session_timer_expires_the_verification_once(self, api: Api, clock):
        """Past session_ttl_s the worker expires it (no read needed), removes the timer, and a
        second pass fires nothing."""
        started = await api.start()
        rt = api.rt
        assert await rt.store.count_timers() == 1
        clock.advance(599)
        assert await rt.timers.run_once() == 0
        clock.advance(1)
        assert await rt.timers.run_once() == 1
        record = await rt.store.load(started["id"])
        assert record is not None
        assert (record.status, record.last_code, record.subject) == (Status.EXPIRED, "4018", None)
        assert await rt.store.count_timers() == 0
        assert await rt.timers.run_once() == 0
        assert (await rt.store.load(started["id"])).version == record.version  # type: ignore[union-attr]

    async def test_a_claimed_timer_whose_worker_died_fires_after_the_lease(self, api: Api, clock):
        """A claim without a firing (a crash) leaves the timer to come due again after the lease."""
        started = await api.start()
        rt = api.rt
        shard = int(started["id"][:4], 16)
        clock.advance(600)
        claimed = await rt.store.claim_due_timers(shard, clock.now_ms(), rt.settings.timer_lease_ms, 10)
        assert len(claimed) == 1  # ... and the worker dies here
        assert await rt.timers.run_once() == 0
        clock.advance(rt.settings.timer_lease_ms / 1000)
        assert await rt.timers.run_once() == 1
        record = await rt.store.load(started["id"])
        assert record is not None
        assert record.status is Status.EXPIRED
        assert record.version == 2, "expired exactly once"

    async def test_result_timer_expires_an_unredeemed_token(self, api: Api, clock):
        """A verified token not redeemed within result_ttl_s expires (status expired, 4000)."""
        started = await api.start("01044445555")
        code = await api.latest_code("01044445555")
        _, verified = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        clock.advance(600)
        assert await api.rt.timers.run_once() == 1
        status, body = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert (status, body["error"]["code"]) == (409, "4000")
        _, read = await api.call("GET", f"/v1/verifications/{started['id']}")
        assert read["status"] == "expired"
        assert "key_token" not in read


class TestOutbox:
    async def test_callback_is_signed_with_the_clients_key(self, api: Api):
        """verified -> a signed verification.updated POST carrying the verification and its token."""
        server, received = await receiver([])
        try:
            url = str(server.make_url("/hook"))
            started = await api.start("01066667777", callback_url=url)
            code = await api.latest_code("01066667777")
            _, verified = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
            await api.rt.dispatcher.read_once(block_ms=1)
            assert len(received) == 1
            headers, body = received[0]
            assert signing.verify(API_KEY, body, headers[signing.HEADER], time.time())
            event = json.loads(body)
            assert event["type"] == "verification.updated"
            assert event["verification"]["status"] == "verified"
            assert event["verification"]["key_token"] == verified["key_token"]
            assert event["event_id"] == f"{started['id']}.2"
        finally:
            await server.close()

    async def test_a_failed_callback_is_retried_with_back_off_until_2xx(self, api: Api):
        """A 500 leaves the entry pending; the recovery pass delivers it again after the back-off."""
        api.rt.dispatcher.settings = replace(api.rt.settings, outbox_retry_idle_ms=50)
        server, received = await receiver([500, 503])
        try:
            started = await api.start("01066660000", callback_url=str(server.make_url("/hook")))
            await api.call("POST", f"/v1/verifications/{started['id']}/cancel")
            await api.rt.dispatcher.read_once(block_ms=1)
            for _ in range(50):
                if len(received) >= 3:
                    break
                await asyncio.sleep(0.05)
                await api.rt.dispatcher.recover_once()
            assert len(received) == 3
            assert {json.loads(body)["event_id"] for _, body in received} == {f"{started['id']}.2"}
            assert await api.rt.dispatcher.pending_count() == 0
        finally:
            await server.close()

    async def test_entries_a_crashed_dispatcher_left_are_recovered(self, api: Api):
        """Read but never acknowledged (the dispatcher died): another one claims and performs it."""
        rt = api.rt
        rt.dispatcher.settings = replace(rt.settings, outbox_retry_idle_ms=50)
        started = await api.start("01088880000")
        stream = rt.store.keys.outbox(int(started["id"][:4], 16))
        taken: Any = await rt.store.redis.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=10)
        assert len(taken[0][1]) == 1  # the dead dispatcher held the SMS
        assert await rt.dispatcher.read_once(block_ms=1) == 0
        await asyncio.sleep(0.1)
        assert await rt.dispatcher.recover_once() == 1
        messages = await api.inbox("01088880000")
        assert len(messages) == 1
        assert await rt.store.redis.xlen(stream) == 0, "acknowledged entries are deleted"

    async def test_a_superseded_code_is_not_sent(self, api: Api):
        """When a resend replaced the code before delivery, only the newest code is sent."""
        started = await api.start("01099990000")
        await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        messages = await api.inbox("01099990000")
        assert len(messages) == 1
        path = f"/v1/verifications/{started['id']}/confirm"
        status, body = await api.call("POST", path, {"code": messages[0]["code"]})
        assert (status, body["status"]) == (200, "verified")


class TestCallbackSafety:
    async def test_a_redirect_is_never_followed(self, api: Api):
        """A callback answering 307 to an internal address: not followed, retried later as failed."""
        hits: list[str] = []

        async def internal(request: web.Request) -> web.Response:
            hits.append(request.path)
            return web.Response(text="ok")

        inner = web.Application()
        inner.router.add_route("*", "/admin", internal)
        inner_server = TestServer(inner, host="127.0.0.1", port=free_port())
        await inner_server.start_server()

        async def bounce(_: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(str(inner_server.make_url("/admin")))

        outer = web.Application()
        outer.router.add_post("/hook", bounce)
        outer_server = TestServer(outer, host="127.0.0.1", port=free_port())
        await outer_server.start_server()
        try:
            started = await api.start("01077770000", callback_url=str(outer_server.make_url("/hook")))
            await api.call("POST", f"/v1/verifications/{started['id']}/cancel")
            await api.rt.dispatcher.read_once(block_ms=1)
            assert hits == []
            assert await api.rt.dispatcher.pending_count() == 1, "kept for a retry"
        finally:
            await outer_server.close()
            await inner_server.close()

    async def test_the_resolver_refuses_names_of_private_addresses(self):
        """Names are checked on the connection itself: localhost resolves to nothing usable."""
        resolver = PublicOnlyResolver()
        try:
            with pytest.raises(OSError, match="no public address"):
                await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    @pytest.mark.parametrize(("host", "private"), [
        ("127.1", True), ("2130706433", True), ("0x7f000001", True), ("10.1", True),
        ("100.64.0.1", True), ("169.254.169.254", True), ("[::1]", True), ("[::ffff:127.0.0.1]", True),
        ("[64:ff9b::7f00:1]", True), ("localhost", True), ("8.8.8.8", False), ("example.com", False),
    ])
    def test_private_addresses_in_every_notation(self, host: str, private: bool):
        """Every way of writing a non-public address is recognised (the full table of disguises
        is in test_callback_address)."""
        url = f"http://{host}/hook"
        if private:
            with pytest.raises(UndeliverableUrlError):
                check_callback_url(url, allow_private=False)
        else:
            assert check_callback_url(url, allow_private=False).startswith("http://")


class TestRecoveryAtScale:
    async def test_a_due_retry_behind_100_backed_off_entries_is_found(self, runtime, store_client, request):
        """Recovery pages through the pending list: 100 entries still backing off do not hide a due
        one behind them (real redis-server: it can set an entry's idle time and delivery count)."""
        if "real" not in request.node.callspec.id:
            pytest.skip("XCLAIM IDLE/RETRYCOUNT are needed to stage the back-offs")
        dispatcher = runtime.dispatcher
        await dispatcher.ensure_groups()
        redis = runtime.store.redis
        stream = runtime.store.keys.outbox(0)
        backing_off = [await redis.xadd(stream, {"e": orjson.dumps({"kind": "notify", "n": n})}) for n in range(100)]
        due = await redis.xadd(stream, {"e": orjson.dumps({"kind": "sms", "n": 100})})
        await redis.xreadgroup(GROUP, "crashed", {stream: ">"}, count=1000)
        await redis.xclaim(stream, GROUP, "crashed", 0, backing_off, idle=6000, retrycount=9)
        await redis.xclaim(stream, GROUP, "crashed", 0, [due], idle=6000, retrycount=1)
        done: list[int] = []

        async def record(payload: dict[str, Any]) -> None:
            done.append(payload["n"])

        dispatcher.handlers.update({"sms": record, "notify": record})
        assert await dispatcher.recover_once() == 1
        assert done == [100]
