"""Provider webhooks against a real redis-server: forged, stale, replayed and out-of-order events,
and the race of a push timer with an approval (exactly one wins; the loser changes nothing)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest

from service import signing
from service.clock import ManualClock
from service.limits import LimitSettings, Window
from service.store.keys import timer_member
from service.timers import TimerWorker
from tests.conftest import Api
from tests.phone import read, sim_items, start

pytestmark = pytest.mark.parametrize("store_client", ["real"], indirect=True)

SECRET = "test-provider-secret"  # the provider secret of the test settings
PHONE = "01055443322"
HOOK = "/v1/providers/simulator/events"


def event(reference: str, code: str = "2000", detail: str | None = None, event_type: str = "pass.push_result",
          event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or uuid.uuid4().hex, "type": event_type, "reference": reference,
            "code": code, "detail_code": detail}


async def send(api: Api, body: dict[str, Any] | bytes, *, secret: str = SECRET, at: float | None = None,
               header: str | None = None, path: str = HOOK) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    signature = header if header is not None else signing.sign(secret, raw, int(at or time.time()))
    if signature:
        headers[signing.HEADER] = signature
    async with api.session.post(api.base + path, data=raw, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def waiting_push(api: Api, phone: str = PHONE, **extra: Any) -> str:
    status, started = await start(api, "pass", phone, **extra)
    assert status == 201, started
    await sim_items(api, "pass", phone)
    return str(started["id"])


async def event_claims(api: Api) -> list[bytes]:
    return list(await api.rt.store.redis.keys("vf:{*}:event:*"))


class TestSignature:
    @pytest.mark.parametrize("case", ["wrong-secret", "missing", "garbage", "tampered", "stale", "future"])
    async def test_a_bad_signature_is_401_and_changes_nothing(self, api: Api, case):
        """Missing, wrong, for another body, or outside the 300 s window: 401 3004, nothing changes."""
        vid = await waiting_push(api)
        body = orjson.dumps(event(f"{vid}:1"))
        now = time.time()
        kwargs: dict[str, Any] = {
            "wrong-secret": {"secret": "not-the-secret"},
            "missing": {"header": ""},
            "garbage": {"header": "t=abc,v1=00"},
            "tampered": {"header": signing.sign(SECRET, body.replace(b"2000", b"6705"), int(now))},
            "stale": {"at": now - 301},
            "future": {"at": now + 301},
        }[case]
        status, answer = await send(api, body, **kwargs)
        assert (status, answer["error"]["code"]) == (401, "3004")
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.version, record.state) == (1, "push_sent")
        assert await event_claims(api) == []

    async def test_inside_the_window_is_accepted(self, api: Api):
        """A signature 299 s old still counts."""
        vid = await waiting_push(api)
        status, answer = await send(api, event(f"{vid}:1"), at=time.time() - 299)
        assert (status, answer["status"]) == (200, "applied")
        assert (await read(api, vid))["status"] == "verified"

    async def test_the_signature_is_checked_before_anything_else(self, api: Api):
        """Unsigned: 401 whatever the provider or body; signed nonsense: 400 3001."""
        for path, raw in ((HOOK, b"{not json"), ("/v1/providers/NOT%20A%20PROVIDER/events", b"{}")):
            status, answer = await send(api, raw, header="", path=path)
            assert (status, answer["error"]["code"]) == (401, "3004")
        for raw in (b"{not json", b"[]", orjson.dumps({"event_id": "e1", "type": "x", "reference": "r"})):
            status, answer = await send(api, raw)
            assert (status, answer["error"]["code"]) == (400, "3001")


class TestDelivery:
    async def test_a_replayed_event_acts_once(self, api: Api):
        """The same event twice: the first verifies, the second is a 200 no-op."""
        vid = await waiting_push(api)
        body = event(f"{vid}:1")
        first = await send(api, body)
        second = await send(api, body)
        assert first == (200, {"status": "applied", "event_id": body["event_id"]})
        assert second[0] == 200
        assert second[1]["status"] in {"ignored", "duplicate"}
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.version, record.status.value) == (2, "verified")
        assert len(await event_claims(api)) == 1

    async def test_the_event_id_is_claimed_in_the_commit(self, api: Api):
        """An event id already claimed (an earlier delivery acted) blocks a decision that would act."""
        vid = await waiting_push(api)
        body = event(f"{vid}:1")
        key = api.rt.store.keys.event_claim(int(vid[:4], 16), "simulator", body["event_id"])
        await api.rt.store.redis.set(key, "an-earlier-delivery")
        assert await send(api, body) == (200, {"status": "duplicate", "event_id": body["event_id"]})
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.version, record.state) == (1, "push_sent")
        other = event(f"{vid}:1", event_id="another-id")
        assert (await send(api, other))[1]["status"] == "applied"

    async def test_concurrent_deliveries_of_one_event_act_once(self, api: Api):
        """Twenty simultaneous deliveries of one approval: one applied, one transition."""
        vid = await waiting_push(api)
        body = event(f"{vid}:1")
        answers = await asyncio.gather(*(send(api, body) for _ in range(20)))
        assert {status for status, _ in answers} == {200}
        assert [a["status"] for _, a in answers].count("applied") == 1
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.version, record.status.value) == (2, "verified")

    async def test_out_of_order_answers_change_nothing(self, api: Api):
        """A denial after the approval, or a report about an older call, is acknowledged and ignored."""
        vid = await waiting_push(api)
        await send(api, event(f"{vid}:1"))
        status, answer = await send(api, event(f"{vid}:1", "6705", "6205"))
        assert (status, answer["status"]) == (200, "ignored")
        assert (await read(api, vid))["status"] == "verified"

        phone = "01011223344"
        _, ars = await start(api, "ars", phone)
        await sim_items(api, "ars", phone)
        await send(api, event(f"{ars['id']}:1", "4602", event_type="ars.call_result"))
        _, again = await api.call("POST", f"/v1/verifications/{ars['id']}/resend")
        assert again["state"] == "calling"
        status, answer = await send(api, event(f"{ars['id']}:1", "2000", event_type="ars.call_result"))
        assert (status, answer["status"]) == (200, "ignored")
        record = await api.rt.store.load(ars["id"])
        assert record is not None
        assert (record.state, record.call_generation) == ("calling", 2)

    @pytest.mark.parametrize("reference", ["not-a-reference", "0000ffffffffffffffffffffffff:1", "zz:1", ":"])
    async def test_unknown_verifications_are_acknowledged(self, api: Api, reference):
        """Unknown or malformed references: 200, nothing created."""
        status, answer = await send(api, event(reference))
        assert (status, answer["status"]) == (200, "ignored")
        assert await api.rt.store.redis.keys("vf:{*}:v:*") == []

    async def test_finished_verifications_are_acknowledged_without_effect(self, api: Api):
        """A canceled verification, and a PASS report after the switch to SMS: 200, no change."""
        vid = await waiting_push(api)
        await api.call("POST", f"/v1/verifications/{vid}/cancel")
        status, answer = await send(api, event(f"{vid}:1"))
        assert (status, answer["status"]) == (200, "ignored")
        assert (await read(api, vid))["status"] == "canceled"

        _, refused = await start(api, "pass", "01067076036")
        switched_id = refused["verification"]["id"]
        await api.call("POST", f"/v1/verifications/{switched_id}/fallback", {"channel": "sms"})
        status, answer = await send(api, event(f"{switched_id}:1"))
        assert (status, answer["status"]) == (200, "ignored")
        assert (await read(api, switched_id))["state"] == "code_sent"


async def fire_after(worker: TimerWorker, shard: int, member: str, delay_s: float) -> None:
    """Fire a timer a few milliseconds later, so that across rounds either side may come first."""
    await asyncio.sleep(delay_s)
    await worker.fire(shard, member)


class TestRecovery:
    async def test_a_reported_push_failure_is_recovered_by_resend(self, api: Api):
        """The gateway reports 6752 after the push: pending, retryable; resend sends push 2, which the
        user approves (push 1 is expired in the app)."""
        vid = await waiting_push(api)
        status, answer = await send(api, event(f"{vid}:1", "6752"))
        assert (status, answer["status"]) == (200, "applied")
        status, body = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, "6752", True)
        status, again = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, again["state"]) == (200, "push_sent")
        assert await sim_items(api, "pass", PHONE, count=2) == [{"reference": f"{vid}:1", "state": "expired"},
                                                              {"reference": f"{vid}:2", "state": "waiting"}]
        status, _ = await api.call("POST", f"/sim/pass/{PHONE}/approve", key=None)
        assert status == 200
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.status.value, record.push_generation) == ("verified", 2)

    async def test_a_resend_decided_on_the_record_before_another_placed_the_call_is_409(
            self, api: Api, monkeypatch: pytest.MonkeyPatch):
        """The race of the test below, made certain: the second resend reads the record as it was
        before the first placed the new call. The phone's limit, filled by the first call,
        refuses its send; as the record has moved on, it is decided again on the record that
        won, and gets the machine's 409 4501, not a 429 for a call it would not have placed."""
        api.rt.limiter.settings = replace(LimitSettings(per_phone=None), per_phone=Window(2, 600))
        phone = "01099887700"
        _, started = await start(api, "ars", phone)
        await sim_items(api, "ars", phone)
        await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": "xx"}, key=None)
        store = api.rt.store
        before = await store.load(started["id"])
        status, first = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        assert (status, first["state"]) == (200, "calling")
        load = store.load
        reads: list[str] = []

        async def stale_first(verification_id: str) -> Any:
            reads.append(verification_id)
            return before if len(reads) == 1 else await load(verification_id)

        monkeypatch.setattr(store, "load", stale_first)
        status, second = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        assert (status, second["error"]["code"]) == (409, "4501"), second
        assert len(reads) == 2  # the stale read, then the one the refusal made
        record = await load(started["id"])
        assert record is not None
        assert (record.call_generation, record.resends_left) == (2, 1)
        assert len(await sim_items(api, "ars", phone, count=2)) == 2

    async def test_simultaneous_requests_for_a_new_call_place_one(self, api: Api):
        """After 4602, ten concurrent resends: one new call (200), the others 409 4501."""
        phone = "01099887766"
        _, started = await start(api, "ars", phone)
        await sim_items(api, "ars", phone)
        await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": "xx"}, key=None)
        answers = await asyncio.gather(*(api.call("POST", f"/v1/verifications/{started['id']}/resend")
                                         for _ in range(10)))
        assert sorted(status for status, _ in answers) == [200] + [409] * 9
        assert {body["error"]["code"] for status, body in answers if status == 409} == {"4501"}
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert (record.call_generation, record.resends_left) == (2, 1)
        assert len(await sim_items(api, "ars", phone, count=2)) == 2


class TestRace:
    async def test_the_push_timer_and_an_approval_arriving_together(self, api: Api, clock: ManualClock):
        """The approval arrives just in time while the push timer fires: in every round exactly one
        wins - verified, or failed 6706 - and the loser writes nothing (no version, claim or notice)."""
        winners = []
        for round_no in range(12):
            phone = f"010555{round_no:05d}"
            vid = await waiting_push(api, phone, callback_url="http://127.0.0.1:9/hook")
            record = await api.rt.store.load(vid)
            assert record is not None
            assert record.push_expires_at is not None
            deadline = record.push_expires_at
            clock.current = deadline - 1  # the approval is stamped just before the deadline...
            timer_worker = TimerWorker(api.rt.transactor, ManualClock(deadline), api.rt.metrics)  # ...the timer at it
            shard = int(vid[:4], 16)
            member = timer_member(vid, "push", deadline)
            body = event(f"{vid}:1")
            (status, answer), _ = await asyncio.gather(
                send(api, body), fire_after(timer_worker, shard, member, delay_s=round_no % 6 / 1000))
            assert status == 200
            record = await api.rt.store.load(vid)
            assert record is not None
            assert record.version == 2, "one transition after the start, never two"
            claim = api.rt.store.keys.event_claim(shard, "simulator", body["event_id"])
            if answer["status"] == "applied":
                assert (record.status.value, record.last_code) == ("verified", "2000")
                assert await api.rt.store.redis.exists(claim) == 1
            else:
                assert answer["status"] == "ignored"
                assert (record.status.value, record.last_code) == ("failed", "6706")
                assert await api.rt.store.redis.exists(claim) == 0
            assert await api.rt.store.redis.zscore(api.rt.store.keys.timers(shard), member) is None
            entries = await api.rt.store.redis.xrange(api.rt.store.keys.outbox(shard))
            notices = [e for _, f in entries if (e := orjson.loads(f[b"e"]))["kind"] == "notify" and e["id"] == vid]
            assert len(notices) == 1, "only the winner tells the client"
            winners.append(record.status.value)
        assert set(winners) <= {"verified", "failed"}
