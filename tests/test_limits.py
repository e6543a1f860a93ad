"""The abuse limits (contract section 9): settings, sliding windows, Retry-After, exactness.

Store tests run on fakeredis and on the session's real redis-server (`store_client`); the races
run on the real server with two client objects, with two OS processes, and on a three-node
Redis Cluster that the test starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from service.limits import (
    DEFAULTS,
    LimitSettings,
    Refusal,
    Window,
    counted_by,
    refusal_of,
    retry_after_s,
)
from service.store.limits import (
    SEND_LIMITS,
    Grant,
    Limiter,
    LimiterKeys,
    keyed_digest_for,
    refusal_counter,
)
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000_000
S = 1000
DIGEST = keyed_digest_for(b"test-service-key")
PHONE = "01012345678"
IP = "203.0.113.7"


def make(client: Any, raw: dict[str, Any] | None = None, on_refusal: Any = None) -> Limiter:
    return Limiter(client, LimitSettings.from_config(raw), DIGEST, lambda: T0, on_refusal)


async def start(lim: Limiter, now: int = T0, *, phone: str | None = PHONE, ip: str | None = IP,
                vid: str = "v-start", client: str = "acme", sends: bool = True) -> Grant | Refusal:
    return await lim.acquire(client_id=client, phone=phone, ip=ip, verification_id=vid, kind="start",
                             now_ms=now, sends=sends)


async def send(lim: Limiter, now: int = T0, *, vid: str = "v-start", phone: str = PHONE,
               client: str = "acme") -> Grant | Refusal:
    return await lim.acquire(client_id=client, phone=phone, ip=None, verification_id=vid, kind="send",
                             now_ms=now)


async def stored(client: Any) -> dict[str, list[str]]:
    """Every key of the store and the members of each."""
    found: dict[str, list[str]] = {}
    async for raw in client.scan_iter(match="*"):
        key = raw.decode()
        found[key] = [m.decode() for m in await client.zrange(key, 0, -1)]
    return found


def refused(result: Grant | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def granted(result: Grant | Refusal) -> Grant:
    assert isinstance(result, Grant), result
    return result


# ---- settings ----


def test_defaults_are_the_contracts() -> None:
    assert LimitSettings.from_config(None) == LimitSettings.from_config({}) == DEFAULTS
    assert DEFAULTS.per_phone == Window(5, 600)
    assert DEFAULTS.resend_cooldown_s == 0
    assert DEFAULTS.resend_cooldown is None
    assert (DEFAULTS.per_ip, DEFAULTS.per_prefix, DEFAULTS.per_client) == (None, None, None)
    assert DEFAULTS.prefix_digits == 7


def test_full_section_parses() -> None:
    parsed = LimitSettings.from_config({
        "per_phone": {"sends": 3, "window_s": 300},
        "resend_cooldown_s": 30,
        "per_ip": {"starts": 10, "window_s": 600},
        "per_prefix": {"starts": 20, "window_s": 3600, "digits": 6},
        "per_client": {"starts": 100, "window_s": 60},
    })
    assert parsed == LimitSettings(Window(3, 300), 30, Window(10, 600), Window(20, 3600), 6, Window(100, 60))
    assert parsed.resend_cooldown == Window(1, 30)


def test_missing_keys_keep_their_defaults() -> None:
    parsed = LimitSettings.from_config({"per_ip": {"starts": 4}, "per_phone": {"window_s": 60}})
    assert parsed.per_ip == Window(4, 600)
    assert parsed.per_phone == Window(5, 60)
    assert LimitSettings.from_config({"per_prefix": {"starts": 2}}).per_prefix == Window(2, 3600)
    assert LimitSettings.from_config({"per_client": {"starts": 2}}).per_client == Window(2, 60)


def test_null_turns_a_limit_off() -> None:
    assert LimitSettings.from_config({"per_phone": None}).per_phone is None
    assert LimitSettings.from_config({"per_phone": {"sends": None}}).per_phone is None
    assert LimitSettings.from_config({"resend_cooldown_s": None}).resend_cooldown is None
    assert LimitSettings.from_config({"per_ip": {"starts": None, "window_s": 600}}).per_ip is None


@pytest.mark.parametrize(("raw", "named"), [
    ({"per_phne": {"sends": 1}}, "limits.per_phne: unknown key"),
    ({"per_phone": {"send": 1}}, "limits.per_phone.send: unknown key"),
    ({"per_ip": {"starts": 1, "digits": 3}}, "limits.per_ip.digits: unknown key"),
    ({"per_phone": {"sends": 0}}, "limits.per_phone.sends: must be a whole number 1 or more or null, not 0"),
    ({"per_phone": {"sends": True}}, "limits.per_phone.sends"),
    ({"per_phone": {"sends": "5"}}, "limits.per_phone.sends"),
    ({"per_phone": {"sends": 2.5}}, "limits.per_phone.sends"),
    ({"per_ip": {"starts": 1, "window_s": None}}, "limits.per_ip.window_s: must be a whole number 1 or more, not None"),
    ({"per_ip": {"starts": 1, "window_s": -1}}, "limits.per_ip.window_s"),
    ({"per_prefix": {"starts": 1, "digits": 0}}, "limits.per_prefix.digits: must be a whole number from 1 to 15"),
    ({"per_prefix": {"starts": 1, "digits": 16}}, "limits.per_prefix.digits"),
    ({"per_client": 5}, "limits.per_client: must be a mapping or null, not 5"),
    ({"resend_cooldown_s": -1}, "limits.resend_cooldown_s: must be a whole number 0 or more or null"),
    ({"resend_cooldown_s": "30s"}, "limits.resend_cooldown_s"),
])
def test_bad_keys_are_named(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        LimitSettings.from_config(raw)


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(ValueError, match=r"limits\.per_ip\.starts") as caught:
        LimitSettings.from_config({"per_ip": {"starts": -3}, "bogus": 1, "per_phone": {"sends": "x"}})
    message = str(caught.value)
    assert "limits.bogus" in message
    assert "limits.per_phone.sends" in message


def test_a_section_that_is_no_mapping_is_refused() -> None:
    with pytest.raises(ValueError, match="limits: must be a mapping"):
        LimitSettings.from_config(["per_phone"])  # type: ignore[arg-type]


# ---- pure decisions ----


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after_s(1) == 1
    assert retry_after_s(1000) == 1
    assert retry_after_s(1001) == 2
    assert retry_after_s(599_999) == 600


def test_the_longest_wait_decides() -> None:
    refusal = refusal_of([("per_phone", 5_000), ("per_client", 59_001), ("per_ip", 30_000)])
    assert refusal == Refusal("per_client", 60, ("per_phone", "per_client", "per_ip"))
    assert refusal.headers == {"Retry-After": "60"}
    assert refusal_of([]) is None


def limits_of(**kwargs: Any) -> list[str]:
    everything = LimitSettings.from_config({"resend_cooldown_s": 30, "per_ip": {"starts": 1},
                                            "per_prefix": {"starts": 1}, "per_client": {"starts": 1}})
    return [c.limit for c in counted_by(everything, client_id="acme", **kwargs)]


def test_which_limits_count_what() -> None:
    full = {"phone": PHONE, "ip": IP, "verification_id": "v1"}
    assert limits_of(kind="start", **full) == ["per_phone", "resend_cooldown", "per_ip", "per_prefix",
                                               "per_client"]
    assert limits_of(kind="start", **{**full, "ip": None}) == ["per_phone", "resend_cooldown", "per_prefix",
                                                               "per_client"]
    assert limits_of(kind="start", sends=False, **full) == ["per_ip", "per_prefix", "per_client"]
    assert limits_of(kind="send", **full) == ["per_phone", "resend_cooldown"]
    assert limits_of(kind="start", phone=None, ip=IP, verification_id=None, sends=False) == ["per_ip", "per_client"]


def test_what_sends_needs_a_phone_and_a_verification() -> None:
    with pytest.raises(ValueError, match="needs the phone"):
        limits_of(kind="send", phone=None, ip=None, verification_id="v1")
    with pytest.raises(ValueError, match="needs the phone"):
        limits_of(kind="start", phone=PHONE, ip=None, verification_id=None)
    with pytest.raises(ValueError, match="always sends"):
        limits_of(kind="send", phone=PHONE, ip=None, verification_id="v1", sends=False)
    with pytest.raises(ValueError, match="no digits"):
        limits_of(kind="send", phone="call me", ip=None, verification_id="v1")


def test_spelling_is_no_way_around_a_limit() -> None:
    keys = LimiterKeys(DIGEST)
    def key_of(phone: str, ip: str) -> list[str]:
        found = counted_by(LimitSettings.from_config({"per_ip": {"starts": 1}}), kind="start",
                           client_id="acme", phone=phone, ip=ip, verification_id="v")
        return [keys.key(c) for c in found]
    assert key_of("010-1234-5678", "::1") == key_of("01012345678", "0:0::1")


def test_a_digest_that_could_break_the_hash_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        LimiterKeys(lambda text: "{" + text)


# ---- counting, on fakeredis and the real server ----


async def test_per_phone_allows_five_sends_then_refuses(store_client: Any) -> None:
    lim = make(store_client)
    for i in range(5):
        granted(await start(lim, T0 + i * S, vid=f"v{i}"))
    refusal = refused(await start(lim, T0 + 10 * S, vid="v5"))
    assert refusal.limit == "per_phone"
    assert refusal.exceeded == ("per_phone",)
    assert refusal.retry_after_s == 590


async def test_retry_after_is_truthful(store_client: Any) -> None:
    lim = make(store_client, {"per_phone": {"sends": 2, "window_s": 600}})
    granted(await send(lim, T0 + 123, vid="a"))
    granted(await send(lim, T0 + 5 * S, vid="b"))
    asked = T0 + 60 * S
    refusal = refused(await send(lim, asked, vid="c"))
    # The oldest send leaves the window at T0 + 123 + 600 s: 540.123 s after `asked`.
    assert refusal.retry_after_s == 541
    just_before = refused(await send(lim, T0 + 123 + 600 * S - 1, vid="c"))
    assert just_before.retry_after_s == 1
    granted(await send(lim, T0 + 123 + 600 * S, vid="c"))
    assert asked + refusal.retry_after_s * S >= T0 + 123 + 600 * S


async def test_retry_after_at_the_whole_second_it_names(store_client: Any) -> None:
    lim = make(store_client, {"per_client": {"starts": 1, "window_s": 60}, "per_phone": None})
    granted(await start(lim, T0 + 250, sends=False))
    asked = T0 + 10 * S
    refusal = refused(await start(lim, asked, sends=False))
    assert refusal.retry_after_s == 51  # 50.25 s, rounded up
    assert refused(await start(lim, asked + 50 * S, sends=False)).retry_after_s == 1
    granted(await start(lim, asked + refusal.retry_after_s * S, sends=False))


async def test_windows_slide(store_client: Any) -> None:
    lim = make(store_client)
    for i in range(5):
        granted(await send(lim, T0 + i * 100 * S, vid=f"v{i}"))
    assert refused(await send(lim, T0 + 500 * S, vid="x")).retry_after_s == 100
    # At T0 + 600 s only the first send has left the window: one place, not five.
    granted(await send(lim, T0 + 600 * S, vid="x"))
    assert refused(await send(lim, T0 + 600 * S, vid="y")).retry_after_s == 100
    granted(await send(lim, T0 + 700 * S, vid="y"))
    assert refused(await send(lim, T0 + 700 * S, vid="z")).retry_after_s == 100


async def test_a_lowered_limit_waits_for_enough_sends_to_leave(store_client: Any) -> None:
    for i in range(5):
        granted(await send(make(store_client), T0 + i * 10 * S, vid=f"v{i}"))
    lowered = make(store_client, {"per_phone": {"sends": 2}})
    # Five counted, two allowed: room for one more once only one is left, when the fourth-oldest
    # (T0 + 30 s) leaves.
    assert refused(await send(lowered, T0 + 100 * S, vid="x")).retry_after_s == 530


async def test_cooldown_runs_from_the_starts_send(store_client: Any) -> None:
    lim = make(store_client, {"resend_cooldown_s": 30})
    granted(await start(lim, T0, vid="v1"))
    refusal = refused(await send(lim, T0 + 10 * S + 1, vid="v1"))
    assert (refusal.limit, refusal.retry_after_s) == ("resend_cooldown", 20)
    assert refused(await send(lim, T0 + 30 * S - 1, vid="v1")).retry_after_s == 1
    granted(await send(lim, T0 + 30 * S, vid="v1"))
    assert refused(await send(lim, T0 + 31 * S, vid="v1")).retry_after_s == 29
    # Another verification of the same phone has its own cooldown.
    granted(await start(lim, T0 + 31 * S, vid="v2"))


async def test_a_refused_resend_changes_nothing(store_client: Any) -> None:
    lim = make(store_client, {"per_phone": {"sends": 3}, "resend_cooldown_s": 30})
    granted(await start(lim, T0, vid="v1"))
    granted(await send(lim, T0 + 40 * S, vid="v1"))
    before = await stored(store_client)
    assert refused(await send(lim, T0 + 50 * S, vid="v1")) == Refusal("resend_cooldown", 20, ("resend_cooldown",))
    assert await stored(store_client) == before
    # The cooldown runs from the last accepted send (T0 + 40 s), not from the refused one.
    granted(await send(lim, T0 + 70 * S, vid="v1"))
    before = await stored(store_client)
    assert refused(await send(lim, T0 + 100 * S, vid="v1")) == Refusal("per_phone", 500, ("per_phone",))
    assert await stored(store_client) == before


async def test_refusals_count_nothing_in_any_scope(store_client: Any) -> None:
    lim = make(store_client, {"per_ip": {"starts": 10}, "per_prefix": {"starts": 10},
                              "per_client": {"starts": 2}})
    granted(await start(lim, T0, phone="01011110000", vid="a"))
    granted(await start(lim, T0, phone="01022220000", vid="b"))
    before = await stored(store_client)
    # The phone, ip and prefix scopes have room and reserve; the client scope refuses; all undone.
    for i in range(5):
        assert refused(await start(lim, T0 + S, phone=f"0103333000{i}", vid=f"c{i}")).limit == "per_client"
    assert await stored(store_client) == before


async def test_off_limits_count_nothing(store_client: Any) -> None:
    lim = make(store_client)  # the defaults: only per_phone
    granted(await start(lim, T0, vid="v1"))
    granted(await send(lim, T0 + S, vid="v1"))
    keys = await stored(store_client)
    assert [key.rsplit(":", 1)[1] for key in keys] == ["per_phone"]
    assert len(next(iter(keys.values()))) == 2
    await store_client.flushall()
    nothing = make(store_client, {"per_phone": None})
    for i in range(20):
        assert granted(await start(nothing, T0, vid=f"v{i}")).counted == ()
    assert await stored(store_client) == {}


async def test_a_start_without_an_ip_is_not_counted_by_per_ip(store_client: Any) -> None:
    lim = make(store_client, {"per_ip": {"starts": 1}, "per_phone": None})
    for i in range(3):
        assert granted(await start(lim, T0, ip=None, vid=f"v{i}")).counted == ()
    granted(await start(lim, T0, ip=IP, vid="w1"))
    assert refused(await start(lim, T0, ip=IP, vid="w2")).limit == "per_ip"
    granted(await start(lim, T0, ip="203.0.113.8", vid="w3"))


async def test_per_prefix_counts_numbers_sharing_their_first_digits(store_client: Any) -> None:
    lim = make(store_client, {"per_prefix": {"starts": 2, "digits": 7}, "per_phone": None})
    granted(await start(lim, T0, phone="01012340001"))
    granted(await start(lim, T0, phone="01012349999"))
    assert refused(await start(lim, T0, phone="01012345555")).limit == "per_prefix"
    granted(await start(lim, T0, phone="01012350000"))  # another prefix


async def test_every_limit_counts_per_client(store_client: Any) -> None:
    lim = make(store_client, {"per_ip": {"starts": 1}, "per_prefix": {"starts": 1}, "per_client": {"starts": 1}})
    granted(await start(lim, T0, client="acme"))
    refused(await start(lim, T0, client="acme", vid="v2"))
    granted(await start(lim, T0, client="globex"))


async def test_the_longest_wait_among_the_scopes_decides(store_client: Any) -> None:
    lim = make(store_client, {"per_phone": {"sends": 1, "window_s": 600}, "per_ip": {"starts": 1, "window_s": 300},
                              "per_client": {"starts": 1, "window_s": 60}})
    granted(await start(lim, T0))
    refusal = refused(await start(lim, T0 + 10 * S, vid="v2"))
    assert refusal == Refusal("per_phone", 590, ("per_phone", "per_ip", "per_client"))
    await store_client.flushall()
    # The first scope's wait is short, a later scope's is long.
    lim = make(store_client, {"per_phone": {"sends": 1, "window_s": 60}, "per_client": {"starts": 1, "window_s": 600}})
    granted(await start(lim, T0))
    refusal = refused(await start(lim, T0 + 10 * S, vid="v2"))
    assert refusal == Refusal("per_client", 590, ("per_phone", "per_client"))


async def test_check_counts_nothing(store_client: Any) -> None:
    lim = make(store_client, {"per_phone": {"sends": 1}})
    kwargs: dict[str, Any] = {"client_id": "acme", "phone": PHONE, "ip": None, "verification_id": "v",
                              "kind": "start", "now_ms": T0}
    assert await lim.check(**kwargs) is None
    assert await stored(store_client) == {}
    granted(await lim.acquire(**kwargs))
    refusal = await lim.check(**{**kwargs, "now_ms": T0 + S})
    assert refusal is not None
    assert refusal.retry_after_s == 599


# ---- giving counts back ----


async def test_release_gives_the_counts_back(store_client: Any) -> None:
    lim = make(store_client, {"per_client": {"starts": 3}})
    grants = [granted(await start(lim, T0, vid=f"v{i}")) for i in range(3)]
    refused(await start(lim, T0, vid="v3"))
    await lim.release(grants[0])
    await lim.release(grants[0])  # again: harmless
    granted(await start(lim, T0, vid="v3"))
    refused(await start(lim, T0, vid="v4"))
    await lim.release(Grant("", ()))


async def test_a_start_that_sends_nothing_gives_back_its_send(store_client: Any) -> None:
    lim = make(store_client, {"per_phone": {"sends": 1}, "per_client": {"starts": 2}})
    first = granted(await start(lim, T0, vid="v1"))
    await lim.release(first, SEND_LIMITS)  # say, a refusal at start that asks no upstream
    granted(await start(lim, T0, vid="v2"))  # per_phone has its place back
    assert refused(await start(lim, T0, vid="v3")).exceeded == ("per_phone", "per_client")


async def test_a_released_resend_restores_the_cooldown(store_client: Any) -> None:
    lim = make(store_client, {"resend_cooldown_s": 60})
    granted(await start(lim, T0, vid="v1"))
    resend = granted(await send(lim, T0 + 70 * S, vid="v1"))
    assert refused(await send(lim, T0 + 100 * S, vid="v1")).retry_after_s == 30
    await lim.release(resend)  # the machine refused it (4302): as if it was never asked
    granted(await send(lim, T0 + 100 * S, vid="v1"))


async def test_a_failure_midway_gives_back_what_was_reserved(store_client: Any) -> None:
    lim = make(store_client, {"per_client": {"starts": 5}})
    real = lim._acquire
    calls = 0

    async def failing(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        reply = await real(**kwargs)
        if calls == 2:
            raise ConnectionError("lost the reply")
        return reply

    lim._acquire = failing
    with pytest.raises(ConnectionError):
        await start(lim, T0)
    assert calls == 2
    assert await stored(store_client) == {}


async def test_refusals_are_counted_by_limit(store_client: Any) -> None:
    registry = CollectorRegistry()
    lim = make(store_client, {"per_phone": {"sends": 1}}, refusal_counter(registry))
    granted(await start(lim, T0))
    refused(await start(lim, T0, vid="v2"))
    refused(await send(lim, T0, vid="v2"))
    def value(limit: str) -> float | None:
        return registry.get_sample_value("veriflow_limit_refusals_total", {"limit": limit})
    assert value("per_phone") == 2
    assert value("per_client") == 0


# ---- personal data and slots ----


async def test_keys_hold_no_phone_or_ip(store_client: Any) -> None:
    lim = make(store_client, {"per_ip": {"starts": 9}, "per_prefix": {"starts": 9}, "per_client": {"starts": 9},
                              "resend_cooldown_s": 30})
    phone, ip = "01098765432", "198.51.100.23"
    granted(await start(lim, T0, phone=phone, ip=ip, vid="v1"))
    granted(await send(lim, T0 + 31 * S, phone=phone, vid="v1"))
    text = json.dumps(await stored(store_client))
    unkeyed = [hashlib.sha256(value.encode()).hexdigest()[:24]
               for value in (phone, ip, phone[:7], "acme\0" + phone, "phone\0acme\0" + phone)]
    for needle in (phone, phone[:7], phone[-8:], ip, "51.100", *unkeyed):
        assert needle not in text


async def test_the_keys_of_one_phone_share_a_slot(store_client: Any) -> None:
    lim = make(store_client, {"resend_cooldown_s": 30, "per_ip": {"starts": 9}, "per_prefix": {"starts": 9},
                              "per_client": {"starts": 9}})
    grants = [granted(await start(lim, T0, vid=f"v{i}")) for i in range(3)]
    phone_keys = {held.key for grant in grants for held in grant.groups[0]}
    assert len(phone_keys) == 4  # per_phone and three cooldowns
    assert len({key.split("}")[0] for key in phone_keys}) == 1
    # Every group a script is called with is in one slot.
    for grant in grants:
        for group in grant.groups:
            assert len({key_slot(held.key.encode()) for held in group}) == 1
    other = granted(await start(lim, T0, client="globex"))
    assert other.groups[0][0].key not in phone_keys


# ---- a model: any sequence of requests is decided as the windows say ----


class Model:
    """The limits as a list of times per key, decided one request at a time."""

    def __init__(self, lim: Limiter) -> None:
        self.lim = lim
        self.times: dict[str, list[int]] = {}

    def decide(self, now: int, **request: Any) -> Refusal | None:
        found = counted_by(self.lim.settings, **request)
        waits = []
        for counted in found:
            key = self.lim.keys.key(counted)
            live = sorted(t for t in self.times.get(key, []) if t > now - counted.rule.window_ms)
            if len(live) >= counted.rule.count:
                waits.append((counted.limit, live[len(live) - counted.rule.count] + counted.rule.window_ms - now))
        refusal = refusal_of(waits)
        if refusal is None:
            for counted in found:
                self.times.setdefault(self.lim.keys.key(counted), []).append(now)
        return refusal


REQUESTS = st.lists(st.tuples(
    st.integers(0, 40_000),  # ms since the previous request
    st.sampled_from(["start", "send"]),
    st.integers(0, 3),  # phone
    st.sampled_from([None, "203.0.113.1", "203.0.113.2"]),
    st.integers(0, 2),  # verification
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=REQUESTS)
def test_the_store_decides_as_the_model(requests: list[tuple[int, str, int, str | None, int]]) -> None:
    async def run() -> None:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        lim = make(client, {"per_phone": {"sends": 3, "window_s": 60}, "resend_cooldown_s": 20,
                            "per_ip": {"starts": 2, "window_s": 90}, "per_prefix": {"starts": 3, "window_s": 120, "digits": 9},
                            "per_client": {"starts": 4, "window_s": 100}})
        model = Model(lim)
        now = T0
        for gap, kind, phone, ip, vid in requests:
            now += gap
            request: dict[str, Any] = {"client_id": "acme", "phone": f"010123400{phone:02d}",
                                       "ip": ip if kind == "start" else None, "verification_id": f"v{vid}",
                                       "kind": kind}
            expected = model.decide(now, **request)
            got = await lim.acquire(now_ms=now, **request)
            assert (got if isinstance(got, Refusal) else None) == expected
        await client.aclose()

    asyncio.run(run())


# ---- exactness under concurrency, on the real server ----

M, N = 50, 5

RACES: dict[str, tuple[dict[str, Any], Callable[[int], dict[str, Any]], set[str]]] = {
    # name: limits, the i-th request, the limits a refusal may name (the longest wait among the
    # limits exceeded when it was refused)
    "one phone": ({}, lambda i: {"phone": PHONE, "ip": IP, "verification_id": f"v{i}", "kind": "start"},
                  {"per_phone"}),
    "every limit at five": (
        {"per_ip": {"starts": N}, "per_prefix": {"starts": N}, "per_client": {"starts": N}},
        lambda i: {"phone": PHONE, "ip": IP, "verification_id": f"v{i}", "kind": "start"},
        {"per_phone", "per_prefix"}),
    "client, the last scope": (
        {"per_ip": {"starts": 20}, "per_prefix": {"starts": 30}, "per_client": {"starts": N}},
        lambda i: {"phone": f"0109{i:07d}", "ip": IP, "verification_id": f"v{i}", "kind": "start"},
        {"per_client", "per_ip"}),
    "ip, a middle scope": (
        {"per_ip": {"starts": N}, "per_client": {"starts": 2 * M}},
        lambda i: {"phone": f"0109{i:07d}", "ip": IP, "verification_id": f"v{i}", "kind": "start"},
        {"per_ip"}),
    "prefix": (
        {"per_prefix": {"starts": N}, "per_client": {"starts": 2 * M}},
        lambda i: {"phone": f"0101234{i:04d}", "ip": f"198.51.100.{i}", "verification_id": f"v{i}",
                   "kind": "start"}, {"per_prefix"}),
    "sends of one verification": (
        {"per_phone": {"sends": N}},
        lambda _: {"phone": PHONE, "ip": None, "verification_id": "v", "kind": "send"}, {"per_phone"}),
}


async def race(limiters: list[Limiter], request: Callable[[int], dict[str, Any]], m: int = M) -> list[Grant | Refusal]:
    """`m` acquisitions at once, spread over the limiters, released together."""
    for lim in limiters:
        await asyncio.gather(*(lim.redis.ping() for _ in range(m)))  # connections ready
    gate = asyncio.Event()

    async def one(i: int) -> Grant | Refusal:
        await gate.wait()
        return await limiters[i % len(limiters)].acquire(client_id="acme", now_ms=T0, **request(i))

    tasks = [asyncio.create_task(one(i)) for i in range(m)]
    await asyncio.sleep(0)
    gate.set()
    return list(await asyncio.gather(*tasks))


async def assert_counts_are_the_grants(client: Any, results: Sequence[Grant | Refusal]) -> None:
    """Each stored member is a grant's, and each grant is counted in every key it holds."""
    grants = [r for r in results if isinstance(r, Grant)]
    members = {grant.member for grant in grants}
    content = await stored(client)
    assert {m for found in content.values() for m in found} <= members
    for grant in grants:
        for group in grant.groups:
            for held in group:
                assert grant.member in content[held.key]


@pytest.fixture
async def two_clients(redis_server: str) -> AsyncIterator[list[Any]]:
    """Two independent clients of the real server, as two API processes have."""
    clients = [aioredis.Redis.from_url(redis_server) for _ in range(2)]
    await clients[0].flushall()
    yield clients
    for client in clients:
        await client.aclose()


@pytest.mark.redis_server
@pytest.mark.parametrize("name", list(RACES))
async def test_exactly_n_of_m_get_through(two_clients: list[Any], name: str) -> None:
    raw, request, named = RACES[name]
    limiters = [make(client, raw) for client in two_clients]
    results = await race(limiters, request)
    refusals = [r for r in results if isinstance(r, Refusal)]
    assert len(results) - len(refusals) == N
    assert {r.limit for r in refusals} <= named
    assert all(r.retry_after_s >= 1 for r in refusals)
    await assert_counts_are_the_grants(two_clients[0], results)


@pytest.mark.redis_server
async def test_one_send_per_cooldown_under_concurrency(two_clients: list[Any]) -> None:
    limiters = [make(client, {"resend_cooldown_s": 30, "per_phone": None}) for client in two_clients]
    results = await race(limiters, lambda _: {"phone": PHONE, "ip": None, "verification_id": "v", "kind": "send"})
    assert sum(isinstance(r, Grant) for r in results) == 1
    assert {r.retry_after_s for r in results if isinstance(r, Refusal)} == {30}


@pytest.mark.redis_server
async def test_released_places_are_taken_again_exactly(two_clients: list[Any]) -> None:
    raw = {"per_ip": {"starts": N}, "per_client": {"starts": N}}
    limiters = [make(client, raw) for client in two_clients]
    first = await race(limiters, RACES["every limit at five"][1])
    grants = [r for r in first if isinstance(r, Grant)]
    await asyncio.gather(*(limiters[0].release(grant) for grant in grants[:2]))
    second = await race(limiters, RACES["every limit at five"][1])
    assert sum(isinstance(r, Grant) for r in second) == 2
    await assert_counts_are_the_grants(two_clients[0], [*grants[2:], *second])


# ---- two OS processes, each with its own event loop and connection ----

PROCESS_LIMITS = {"per_ip": {"starts": 8}, "per_prefix": {"starts": 9}, "per_client": {"starts": 10}}


def child_main() -> None:
    """A child process: `m` acquisitions at once when the parent says go; prints the grants."""
    url, m, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.stdout.write(json.dumps(asyncio.run(_child(url, m, tag))) + "\n")


async def _child(url: str, m: int, tag: str) -> list[str]:
    client = aioredis.Redis.from_url(url)
    lim = make(client, PROCESS_LIMITS)
    await asyncio.gather(*(client.ping() for _ in range(m)))
    await client.rpush(f"test:{tag}:ready", 1)
    await client.blpop([f"test:{tag}:go"], timeout=30)
    results = await asyncio.gather(*(
        lim.acquire(client_id="acme", phone=PHONE, ip=IP, verification_id=f"{tag}-{i}", kind="start", now_ms=T0)
        for i in range(m)
    ))
    await client.aclose()
    return [r.member for r in results if isinstance(r, Grant)]


@pytest.mark.redis_server
@pytest.mark.slow
async def test_exactly_n_across_two_processes(redis_server: str) -> None:
    client = aioredis.Redis.from_url(redis_server)
    await client.flushall()
    code = "from tests.test_limits import child_main; child_main()"
    children = [subprocess.Popen([sys.executable, "-c", code, redis_server, str(M // 2), "gate"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        for _ in children:
            assert await client.blpop(["test:gate:ready"], timeout=60) is not None
        await client.rpush("test:gate:go", 1, 1)
        outputs = [await asyncio.to_thread(child.communicate, timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [child.returncode for child in children] == [0, 0], [err.decode() for _, err in outputs]
    members = [json.loads(out) for out, _ in outputs]
    assert sum(len(found) for found in members) == N
    content = await stored(client)
    per_phone = next(found for key, found in content.items() if key.endswith(":per_phone"))
    assert sorted(per_phone) == sorted(m for found in members for m in found)
    await client.aclose()


# ---- a real Redis Cluster: every script is in one slot ----


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Three masters on loopback, no replicas."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail("redis-server is not installed: run the README's test command (scripts/test)")
    ports = [free_port() for _ in range(3)]
    processes = []
    for port in ports:
        workdir = tmp_path_factory.mktemp(f"cluster{port}")
        processes.append(subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
             "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
             "--cluster-config-file", "nodes.conf"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        ))
    try:
        for port in ports:
            wait_for_port(port)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(cluster_ok(cli, port) for port in ports):
            if time.monotonic() > deadline:
                pytest.fail("the cluster never became ok")
            time.sleep(0.1)
        yield "127.0.0.1", ports[0]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"redis-server on {port} did not start")


def cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run([cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False,
                          timeout=10)
    return "cluster_state:ok" in info.stdout


@pytest.mark.slow
async def test_exactly_n_on_a_cluster(redis_cluster: tuple[str, int]) -> None:
    host, port = redis_cluster
    clients = [RedisCluster(host=host, port=port) for _ in range(2)]
    try:
        await clients[0].flushall()
        raw = {"per_ip": {"starts": N}, "per_prefix": {"starts": N}, "per_client": {"starts": N},
               "resend_cooldown_s": 30}
        limiters = [make(client, raw) for client in clients]
        results = await race(limiters, RACES["every limit at five"][1])
        grants = [r for r in results if isinstance(r, Grant)]
        assert len(grants) == N
        # The scopes are in different slots, on different nodes: the protocol, not one script, spans them.
        slots = {key_slot(group[0].key.encode()) for group in grants[0].groups}
        assert len(slots) == 4
        for grant in grants:
            for group in grant.groups:
                for held in group:
                    assert await clients[0].zscore(held.key, grant.member) is not None
        await limiters[1].release(grants[0])
        assert sum(isinstance(r, Grant) for r in await race(limiters, RACES["every limit at five"][1])) == 1
        cooled = await race(limiters, lambda _: {"phone": "01055550000", "ip": None, "verification_id": "v9",
                                                 "kind": "send"})
        assert sum(isinstance(r, Grant) for r in cooled) == 1
    finally:
        for client in clients:
            await client.aclose()
