"""The abuse limits of contract section 9 through the real aiohttp server (fakeredis and a real
redis-server), and across two API processes sharing one redis-server."""

from __future__ import annotations

import asyncio
import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from service import settings as settings_module
from service.limits import LimitSettings, Window
from service.settings import ConfigError
from tests.conftest import OTHER_KEY, Api, free_port, start_body
from tests.test_processes import Process, wait_ready
from tests.test_security import snapshot

PHONE = "01055500001"


def limited(api: Api, **limits: Any) -> None:
    """Replace the limits the running API counts by (everything else off unless given)."""
    api.rt.limiter.settings = replace(LimitSettings(per_phone=None), **limits)


async def records(api: Api) -> int:
    return len([key async for key in api.rt.store.redis.scan_iter("vf:{*}:v:*")])


async def refusals(api: Api, limit: str) -> float:
    async with api.session.get(api.base + "/metrics") as resp:
        text = await resp.text()
    found = re.search(rf'^veriflow_limit_refusals_total{{limit="{limit}"}} (\S+)$', text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


def assert_limited(status: int, body: dict[str, Any]) -> None:
    assert status == 429, body
    assert body["error"]["code"] == "3006"
    assert body["error"]["retryable"] is True


async def call_with_headers(api: Api, method: str, path: str, body: Any = None,
                            headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    sent = {"Authorization": "Bearer test-key-0001", **(headers or {})}
    async with api.session.request(method, api.base + path, json=body, headers=sent) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


class TestPerPhone:
    async def test_the_default_refuses_the_6th_start_for_one_phone(self, api: Api):
        """Defaults: 5 sends per phone per 10 minutes. The 6th start is 429 3006 with Retry-After,
        creates nothing and sends nothing; another phone and another client are not affected."""
        assert api.rt.limiter.settings.per_phone == Window(5, 600)
        for _ in range(5):
            await api.start(PHONE)
        before = await records(api)
        status, body, headers = await call_with_headers(api, "POST", "/v1/verifications", start_body(PHONE))
        assert_limited(status, body)
        assert 599 <= int(headers["Retry-After"]) <= 600
        assert "verification" not in body
        assert await records(api) == before, "a refused start creates nothing"
        assert len(await api.inbox(PHONE)) == 5, "and sends nothing"
        assert await refusals(api, "per_phone") == 1
        await api.start("01055500002")
        status, _ = await api.call("POST", "/v1/verifications", start_body(PHONE), key=OTHER_KEY)
        assert status == 201, "every limit counts per client"

    async def test_retry_after_is_truthful(self, api: Api, clock):
        """One second before Retry-After the start is still refused; at Retry-After it is allowed."""
        limited(api, per_phone=Window(2, 60))
        await api.start(PHONE)
        clock.advance(20)
        await api.start(PHONE)
        status, body, headers = await call_with_headers(api, "POST", "/v1/verifications", start_body(PHONE))
        assert_limited(status, body)
        wait = int(headers["Retry-After"])
        assert wait == 40, "the oldest send leaves the sliding window 60 s after it was counted"
        clock.advance(wait - 1)
        status, body, headers = await call_with_headers(api, "POST", "/v1/verifications", start_body(PHONE))
        assert_limited(status, body)
        assert headers["Retry-After"] == "1"
        clock.advance(1)
        assert (await api.call("POST", "/v1/verifications", start_body(PHONE)))[0] == 201

    async def test_a_refused_resend_spends_nothing(self, api: Api):
        """Over the limit, a resend is 3006: resends_left is unchanged, no code is sent, the code
        already sent still confirms."""
        limited(api, per_phone=Window(2, 600))
        started = await api.start(PHONE)
        assert len(await api.inbox(PHONE)) == 1  # delivered before the resend replaces it
        status, resent = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        assert (status, resent["resends_left"]) == (200, 2)
        code = await api.latest_code(PHONE, 2)
        before = await snapshot(api)
        status, body, headers = await call_with_headers(api, "POST", f"/v1/verifications/{started['id']}/resend")
        assert_limited(status, body)
        assert await snapshot(api) == before, "a refused resend changes nothing in the store"
        assert int(headers["Retry-After"]) >= 599
        status, read = await api.call("GET", f"/v1/verifications/{started['id']}")
        assert (read["status"], read["resends_left"], read["last_code"]) == ("pending", 2, None)
        assert len(await api.inbox(PHONE)) == 2
        status, confirmed = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        assert (status, confirmed["status"]) == (200, "verified")

    async def test_a_4th_resend_over_a_limit_is_3006_not_4302(self, api: Api, clock):
        """Limits come before the caps: the 4th resend over the limit is 3006 and the verification
        stays pending; once the window has room it is 4302 and ends it."""
        limited(api, per_phone=Window(4, 100))
        started = await api.start(PHONE)
        path = f"/v1/verifications/{started['id']}/resend"
        for _ in range(3):
            assert (await api.call("POST", path))[0] == 200
        status, body = await api.call("POST", path)
        assert_limited(status, body)
        assert (await api.call("GET", f"/v1/verifications/{started['id']}"))[1]["status"] == "pending"
        clock.advance(100)
        status, body = await api.call("POST", path)
        assert (status, body["error"]["code"], body["verification"]["status"]) == (429, "4302", "failed")

    async def test_section_7_answers_come_before_the_limits(self, api: Api, clock):
        """A resend of a canceled verification, or of one whose session is over (a read has not
        noticed yet), is 404 4003 whatever the limits say."""
        limited(api, per_phone=Window(2, 3600))
        started = await api.start(PHONE)
        await api.call("POST", f"/v1/verifications/{started['id']}/cancel")
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        assert (status, body["error"]["code"]) == (404, "4003")
        started = await api.start(PHONE)
        clock.advance(601)
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        assert (status, body["error"]["code"]) == (404, "4003")

    async def test_a_start_refused_by_the_carrier_sends_nothing_and_a_fallback_is_a_send(self, api: Api):
        """A PASS start the carrier refuses (6707, offering SMS) gives its send back; the fallback
        to SMS is a send, refused like any other over the limit (the verification unchanged)."""
        limited(api, per_phone=Window(2, 600))
        phone = "01000006707"
        status, refused = await api.call("POST", "/v1/verifications", {**start_body(phone), "channel": "pass"})
        assert (status, refused["error"]["code"]) == (422, "6707")
        failed = refused["verification"]
        assert failed["fallback"] == ["sms"]
        await api.start(phone)
        await api.start(phone)  # room for two: the refused PASS start sent nothing
        before = await snapshot(api)
        status, body = await api.call("POST", f"/v1/verifications/{failed['id']}/fallback", {"channel": "sms"})
        assert_limited(status, body)
        assert await snapshot(api) == before
        status, read = await api.call("GET", f"/v1/verifications/{failed['id']}")
        assert (read["status"], read["channel"], read["fallback"]) == ("failed", "pass", ["sms"])


class TestStartLimits:
    async def test_per_ip_counts_starts_with_an_end_user_ip(self, api: Api):
        """end_user_ip must be an IP address; per_ip counts the starts of one address (however it
        is spelled), not those without one."""
        limited(api, per_ip=Window(2, 600))
        for bad in ("not-an-ip", "10.0.0.1\n", "\uff11\uff10.0.0.1", 17, ""):
            status, body = await api.call("POST", "/v1/verifications", start_body(PHONE, end_user_ip=bad))
            assert (status, body["error"]["code"]) == (400, "3001"), bad
        await api.start("01055500011", end_user_ip="2001:db8::1")
        await api.start("01055500012", end_user_ip="2001:0db8:0::1")
        status, body = await api.call("POST", "/v1/verifications", start_body("01055500013", end_user_ip="2001:db8::1"))
        assert_limited(status, body)
        await api.start("01055500014", end_user_ip="192.0.2.9")
        await api.start("01055500015")
        assert await refusals(api, "per_ip") == 1

    async def test_per_prefix_and_per_client(self, api: Api):
        """per_prefix counts numbers sharing their first digits; per_client every start of a
        client (an mOTP start too, though it sends nothing)."""
        limited(api, per_prefix=Window(2, 3600), prefix_digits=7)
        await api.start("01077700001")
        await api.start("01077700002")
        status, body = await api.call("POST", "/v1/verifications", start_body("01077700003"))
        assert_limited(status, body)
        await api.start("01077710001")
        limited(api, per_client=Window(1, 60))
        await api.start("01088800001")
        status, body = await api.call("POST", "/v1/verifications", start_body("01088800002"))
        assert_limited(status, body)
        assert (await api.call("POST", "/v1/verifications", start_body("01088800002"), key=OTHER_KEY))[0] == 201

    async def test_a_duplicate_tx_id_counts_nothing(self, api: Api):
        """The 4007 start is not counted: the client's next start still has its place."""
        limited(api, per_client=Window(2, 60))
        await api.start(PHONE, tx_id="order-1")
        status, body = await api.call("POST", "/v1/verifications", start_body(PHONE, tx_id="order-1"))
        assert (status, body["error"]["code"]) == (409, "4007")
        await api.start(PHONE, tx_id="order-2")

    async def test_the_resend_cooldown(self, api: Api, clock):
        """resend_cooldown_s: a second send of one verification waits; another verification does not."""
        limited(api, resend_cooldown_s=30)
        started = await api.start(PHONE)
        status, body, headers = await call_with_headers(api, "POST", f"/v1/verifications/{started['id']}/resend")
        assert_limited(status, body)
        assert headers["Retry-After"] == "30"
        await api.start(PHONE)
        clock.advance(30)
        assert (await api.call("POST", f"/v1/verifications/{started['id']}/resend"))[0] == 200

    async def test_a_429_is_not_kept_under_an_idempotency_key(self, api: Api, clock):
        """The same Idempotency-Key may be retried once the limit has room."""
        limited(api, per_phone=Window(1, 60))
        await api.start(PHONE)
        headers = {"Idempotency-Key": "start-2"}
        status, body = await api.call("POST", "/v1/verifications", start_body(PHONE), headers=headers)
        assert_limited(status, body)
        clock.advance(60)
        status, body = await api.call("POST", "/v1/verifications", start_body(PHONE), headers=headers)
        assert status == 201, body
        again = await api.call("POST", "/v1/verifications", start_body(PHONE), headers=headers)
        assert again == (status, body), "a success is kept as before"

    async def test_concurrent_starts_get_exactly_the_allowed_number(self, api: Api):
        """In one process: of 30 simultaneous starts to one phone, exactly 5 get through."""
        answers = await asyncio.gather(*(api.call("POST", "/v1/verifications", start_body(PHONE))
                                         for _ in range(30)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201] * 5 + [429] * 25
        assert await records(api) == 5


@pytest.mark.slow
async def test_two_api_processes_share_the_limits(redis_server: str, subprocess_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """Two `veriflow api` processes on one redis-server: of 24 simultaneous starts to one phone,
    spread over both, exactly 5 are 201 (the default limit) and the others 429 3006; exactly 5
    verifications exist in the store."""
    client = aioredis.Redis.from_url(redis_server)
    await client.flushall()
    key = "limits-test-key-0001"
    sim_port, ports = free_port(), [free_port(), free_port()]
    env = {**subprocess_env, "VERIFLOW_REDIS_URL": redis_server,
           "VERIFLOW_API_KEYS": f"acme:{key}", "VERIFLOW_SECRET_KEY": "limits-test-secret-key-of-32-bytes!",
           "VERIFLOW_PROVIDER_SECRET": "limits-test-provider-secret",
           "VERIFLOW_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}/sim"}
    started: list[Process] = []
    try:
        simulator = Process(["simulator", "--port", str(sim_port)], env, tmp_path / "sim.log")
        started.append(simulator)
        await wait_ready(f"http://127.0.0.1:{sim_port}", simulator, "/sim/sms?phone=01000000000")
        apis = [Process(["api", "--port", str(port)], env, tmp_path / f"api{n}.log") for n, port in enumerate(ports)]
        started += apis
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, process in zip(bases, apis, strict=True):
            await wait_ready(base, process)

        async with aiohttp.ClientSession() as session:
            async def start(n: int) -> tuple[int, Any, str | None]:
                async with session.post(bases[n % 2] + "/v1/verifications", json=start_body(PHONE),
                                        headers={"Authorization": f"Bearer {key}"}) as resp:
                    return resp.status, await resp.json(content_type=None), resp.headers.get("Retry-After")

            answers = await asyncio.gather(*(start(n) for n in range(24)))
        assert sorted(status for status, _, _ in answers) == [201] * 5 + [429] * 19, answers
        for status, body, retry_after in answers:
            if status == 429:
                assert body["error"]["code"] == "3006"
                assert retry_after is not None
                assert 1 <= int(retry_after) <= 600
        assert {n % 2 for n, (status, _, _) in enumerate(answers) if status == 429} == {0, 1}, (
            "both processes refused some")
        created = [k async for k in client.scan_iter("vf:{*}:v:*")]
        assert len(created) == 5
    finally:
        for process in started:
            process.stop(signal.SIGKILL)
        await client.aclose()


class TestConfiguration:
    def test_the_defaults_are_those_of_the_contract(self):
        limits = settings_module.load({}).limits
        assert limits == LimitSettings(per_phone=Window(5, 600), resend_cooldown_s=0, per_ip=None,
                                       per_prefix=None, prefix_digits=7, per_client=None)

    def test_a_file_merges_deeply_and_a_bad_value_names_its_key(self, tmp_path: Path):
        config = tmp_path / "veriflow.yaml"
        config.write_text("limits: {per_ip: {starts: 3}, per_phone: null}\n", encoding="utf-8")
        limits = settings_module.load({"VERIFLOW_CONFIG": str(config)}).limits
        assert (limits.per_ip, limits.per_phone, limits.per_prefix) == (Window(3, 600), None, None)
        config.write_text("limits: {per_client: {starts: 0}}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"limits\.per_client\.starts"):
            settings_module.load({"VERIFLOW_CONFIG": str(config)})


async def test_openapi_describes_end_user_ip_and_3006(api: Api):
    status, doc = await api.call("GET", "/openapi.json", key=None)
    assert status == 200
    for name in ("SmsStart", "ArsStart", "PassStart", "MotpStart"):
        assert "end_user_ip" in doc["components"]["schemas"][name]["properties"]
    for path in ("/v1/verifications", "/v1/verifications/{id}/resend", "/v1/verifications/{id}/fallback"):
        refused = doc["paths"][path]["post"]["responses"]["429"]
        assert "3006" in refused["description"]
        assert "Retry-After" in refused["headers"]
