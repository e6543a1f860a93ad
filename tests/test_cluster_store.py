"""The store on a real Redis Cluster: 3 primaries with a replica each, started once a session.

A verification's keys, its shard's timer set and its shard's outbox share a hash tag, so each
commit, timer claim and stream read touches one slot. These tests run the service's own store,
engine, timer worker and outbox dispatcher on the cluster, with the 16 shards spread over all
three primaries; the last one kills a primary under load and measures what its failover loses.

Here `store_client` is the cluster (it overrides conftest's), so conftest's `runtime` and `api`
fixtures build the whole service on it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from machines.record import Verification, to_fields
from machines.vocabulary import Channel, Status
from service.effects.dispatcher import Dispatcher
from service.runtime import Runtime
from service.store.client import StoreOptions, connect
from service.store.keys import Keys, motp_user_key, shard_in
from service.store.outbox import GROUP, OutboxStreams
from service.store.store import CommitOps, CommitStatus, Companion, Store
from tests.cluster import Cluster
from tests.conftest import Api, start_body, without_token
from tests.test_api_motp import confirm, enrol, now_code, started

pytestmark = pytest.mark.cluster

KEYS = Keys(16)  # the configured default (config/defaults.yaml: shards: 16)
OK, CONFLICT, TAKEN = CommitStatus.OK, CommitStatus.CONFLICT, CommitStatus.TAKEN


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """Six redis-server processes on loopback, formed into 3 primaries + 3 replicas, for the
    whole session; stopped (and their temp dir removed) at its end."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run the README's test command (scripts/test)")
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def store_client(redis_cluster: Cluster) -> AsyncIterator[RedisCluster]:
    """The service's own client for VERIFLOW_REDIS_URL=redis+cluster://…, every primary flushed."""
    client, info = connect(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    assert info.durable
    await client.flushall()  # sent to every primary
    yield client
    await client.aclose()


def slot_of(key: str) -> int:
    return key_slot(key.encode())


def shard_slot(shard: int) -> int:
    return slot_of(KEYS.timers(shard))


def ops(vid: str, expected: int, **extra: Any) -> CommitOps:
    shard = shard_in(vid)
    base: dict[str, Any] = {
        "record_key": KEYS.record(vid), "timers_key": KEYS.timers(shard), "outbox_key": KEYS.outbox(shard),
        "expected_version": expected, "new_version": expected + 1, "ttl_ms": 600_000,
        "fields": {"state": f"s{expected + 1}"},
    }
    base.update(extra)
    return CommitOps(**base)


def verification(vid: str) -> Verification:
    return Verification(id=vid, client_id="acme", channel=Channel.SMS, state="code_sent",
                        status=Status.PENDING, version=0, definition="test", created_at=int(time.time() * 1000))


def create_ops(record: Verification) -> CommitOps:
    fields = to_fields(record)
    fields.pop("version")  # the script writes it
    return ops(record.id, 0, fields=fields)


def keys_in_slot(cluster: Cluster, port: int, slot: int) -> int:
    """How many keys one node holds in a slot (asked of that node itself, no redirection)."""
    with cluster.client(port) as node:
        return int(node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def test_the_cluster_is_three_primaries_each_with_a_replica(redis_cluster: Cluster) -> None:
    """Every slot served; three primaries with one replica each; the store's 16 shards spread
    over all three, so the tests below cross nodes, not just slots."""
    ranges = redis_cluster.slot_ranges()
    assert sum(r.end - r.start + 1 for r in ranges) == 16384
    primaries = redis_cluster.primary_ports()
    assert len(primaries) == 3
    replicas = [redis_cluster.replicas_of(port) for port in primaries]
    assert all(len(of) == 1 for of in replicas)
    assert sorted(primaries + [port for of in replicas for port in of]) == sorted(redis_cluster.alive_ports)
    served = {redis_cluster.primary_for_slot(shard_slot(shard)) for shard in range(KEYS.shards)}
    assert served == set(primaries)
    for port in redis_cluster.alive_ports:
        assert redis_cluster.cluster_info(port)["cluster_state"] == "ok"


class TestCommitScript:
    async def test_compare_and_set_with_timers_outbox_claim_and_companion_on_every_shard(
            self, store_client: RedisCluster, redis_cluster: Cluster) -> None:
        """The COMMIT script on each of the 16 shards: creation with a timer, an outbox entry, a
        tx_id claim and a companion hash; a stale version refused; the next version applied with
        the claim released. Each shard's keys live on the primary serving its slot, only there."""
        store = Store(store_client, KEYS)
        ids = {shard: KEYS.new_id(shard) for shard in range(KEYS.shards)}
        for shard, vid in ids.items():
            claim = KEYS.tx_claim(shard, "acme", f"tx-{shard}")
            companion = Companion(f"vf:{{{shard}}}:motp:user-{shard}", 0, 1, {"secret": f"s{shard}"})
            created = await store.commit(ops(vid, 0, timers_add=[(500, f"{vid}|session|500")],
                                             outbox=[orjson.dumps({"kind": "sms", "id": vid})],
                                             claims=[(claim, vid, 30_000)], companion=companion))
            assert created.status is OK
            stale = await store.commit(ops(vid, 0, fields={"state": "stale"}))
            assert (stale.status, stale.detail) == (CONFLICT, "1")
            update = ops(vid, 1, timers_remove=[f"{vid}|session|500"],
                         timers_add=[(900, f"{vid}|result|900")], releases=[(claim, vid)])
            assert (await store.commit(update)).status is OK
            assert await store_client.hgetall(KEYS.record(vid)) == {
                b"version": b"2", b"state": b"s2", b"_c": update.token.encode()}
            assert without_token(await store_client.hgetall(companion.key)) == {b"version": b"1", b"secret": f"s{shard}".encode()}
            assert await store_client.zrange(KEYS.timers(shard), 0, -1) == [f"{vid}|result|900".encode()]
            assert await store_client.xlen(KEYS.outbox(shard)) == 1
            assert await store_client.exists(claim) == 0
            assert 0 < await store_client.pttl(KEYS.record(vid)) <= 600_000
        for shard in ids:
            owner = redis_cluster.primary_for_slot(shard_slot(shard))
            counts = {port: keys_in_slot(redis_cluster, port, shard_slot(shard))
                      for port in redis_cluster.primary_ports()}
            assert counts == {port: 4 if port == owner else 0 for port in counts}  # record, timers, outbox, companion

    async def test_a_taken_claim_writes_nothing(self, store_client: RedisCluster) -> None:
        store = Store(store_client, KEYS)
        vid = KEYS.new_id(5)
        claim = KEYS.tx_claim(5, "acme", "tx-held")
        await store_client.set(claim, "another-verification")
        result = await store.commit(ops(vid, 0, timers_add=[(1, "t")], outbox=[b"{}"], claims=[(claim, vid, 1000)]))
        assert (result.status, result.detail) == (TAKEN, claim)
        assert await store_client.exists(KEYS.record(vid)) == 0
        assert await store_client.exists(KEYS.timers(5)) == 0
        assert await store_client.exists(KEYS.outbox(5)) == 0
        assert await store_client.get(claim) == b"another-verification"

    async def test_a_commit_naming_keys_of_two_slots_is_refused(self, store_client: RedisCluster) -> None:
        """Why every key of a commit shares its hash tag: the cluster runs no script across slots."""
        store = Store(store_client, KEYS)
        vid = KEYS.new_id(0)
        elsewhere = KEYS.tx_claim(1, "acme", "tx-1")
        assert slot_of(elsewhere) != slot_of(KEYS.record(vid))
        with pytest.raises((RedisClusterException, ResponseError), match=r"(?i)slot"):
            await store.commit(ops(vid, 0, claims=[(elsewhere, vid, 1000)]))
        assert await store_client.exists(KEYS.record(vid)) == 0
        assert await store_client.exists(elsewhere) == 0


class TestTimersAndBatches:
    async def test_timer_claim_script_on_every_shard(self, store_client: RedisCluster) -> None:
        """Due timers leased once per lease on each shard; count_timers pipelines across slots."""
        store = Store(store_client, KEYS)
        for shard in range(KEYS.shards):
            await store_client.zadd(KEYS.timers(shard), {f"due-{shard}": 100, f"later-{shard}": 10_000})
        assert await store.count_timers() == 2 * KEYS.shards
        for shard in range(KEYS.shards):
            assert await store.claim_due_timers(shard, now_ms=300, lease_ms=1000, batch=10) == [f"due-{shard}"]
            assert await store.claim_due_timers(shard, now_ms=400, lease_ms=1000, batch=10) == []
            assert await store_client.zscore(KEYS.timers(shard), f"due-{shard}") == 1300
            assert await store.claim_due_timers(shard, now_ms=1300, lease_ms=1000, batch=10) == [f"due-{shard}"]
            await store.drop_timers(shard, [f"due-{shard}"])
        assert await store.count_timers() == KEYS.shards

    async def test_load_many_and_commit_many_across_every_shard(self, store_client: RedisCluster) -> None:
        """A batch spanning all shards (and so all primaries): each commit its own compare-and-set,
        a stale one refused alone; load_many answers in request order, None for a missing one."""
        store = Store(store_client, KEYS)
        records = [verification(KEYS.new_id(shard)) for shard in range(KEYS.shards) for _ in range(2)]
        assert [r.status for r in await store.commit_many([create_ops(r) for r in records])] == [OK] * len(records)
        missing = KEYS.new_id(3)
        loaded = await store.load_many([missing, *(r.id for r in records)])
        assert loaded == [None, *(replace(r, version=1) for r in records)]
        stale_every_third = [ops(r.id, 0 if i % 3 == 0 else 1, fields={"state": "next"})
                             for i, r in enumerate(records)]
        results = await store.commit_many(stale_every_third)
        assert [(x.status, x.detail) for x in results] == [
            (CONFLICT, "1") if i % 3 == 0 else (OK, None) for i in range(len(records))]
        after = await store.load_many([r.id for r in records])
        assert [(a.version, a.state) for a in after if a] == [
            (1, "code_sent") if i % 3 == 0 else (2, "next") for i in range(len(records))]
        assert await store.commit_many([]) == []


class TestOutbox:
    async def test_read_once_reads_every_shard_and_acknowledges(self, runtime: Runtime) -> None:
        """The dispatcher's cluster path (one XREADGROUP per stream): entries of all 16 shards are
        handled once, acknowledged and deleted; a failed one is claimed again after its back-off."""
        store = runtime.store
        assert isinstance(store.redis, RedisCluster)
        handled: list[str] = []
        handlers: dict[str, Any] = {}
        dispatcher = Dispatcher(OutboxStreams(store.redis, store.keys), replace(runtime.settings, outbox_retry_idle_ms=20),
                                handlers, runtime.metrics, "cluster-test")
        await dispatcher.ensure_groups()
        await dispatcher.ensure_groups()  # BUSYGROUP is fine
        ids = [KEYS.new_id(shard) for shard in range(KEYS.shards)]
        flaky = ids[7]

        async def probe(payload: dict[str, Any]) -> None:
            handled.append(payload["id"])
            if payload["id"] == flaky and handled.count(flaky) == 1:
                raise RuntimeError("the upstream is down, once")

        handlers["probe"] = probe
        batch = [ops(vid, 0, outbox=[orjson.dumps({"kind": "probe", "id": vid})]) for vid in ids]
        assert {r.status for r in await store.commit_many(batch)} == {OK}
        assert await dispatcher.read_once(block_ms=1) == KEYS.shards
        assert sorted(handled) == sorted(ids)
        assert await dispatcher.pending_count() == 1  # the failed one, waiting out its back-off
        assert await dispatcher.read_once(block_ms=1) == 0
        await asyncio.sleep(0.05)
        assert await dispatcher.recover_once() == 1
        assert handled.count(flaky) == 2
        assert await dispatcher.pending_count() == 0
        for shard in range(KEYS.shards):
            assert await store.redis.xlen(KEYS.outbox(shard)) == 0
            groups = await store.redis.xinfo_groups(KEYS.outbox(shard))
            assert [(g["name"], g["pending"]) for g in groups] == [(GROUP.encode(), 0)]


class TestEngine:
    async def test_sms_verification_end_to_end(self, api: Api, redis_cluster: Cluster) -> None:
        """Start (tx_id claimed, in or outside the record's slot), the SMS delivered through the
        outbox, confirm, redeem; a live tx_id refused; all through the engine on the cluster."""
        started_ = await api.start("010-1111-2222", tx_id="order-1", service_name="Acme")
        vid = started_["id"]
        assert keys_in_slot(redis_cluster, redis_cluster.primary_for_slot(slot_of(api.rt.store.keys.record(vid))),
                            slot_of(api.rt.store.keys.record(vid))) >= 3  # record, timers, outbox
        status, body = await api.call("POST", "/v1/verifications", start_body(tx_id="order-1"))
        assert (status, body["error"]["code"]) == (409, "4007")
        code = await api.latest_code("01011112222")
        status, confirmed = await api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": code})
        assert (status, confirmed["status"]) == (200, "verified")
        status, result = await api.call("POST", "/v1/results", {"key_token": confirmed["key_token"]})
        assert (status, result["result"]["phone"]) == (200, "01011112222")
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.status, record.subject) == (Status.COMPLETED, None)
        again = await api.start("01011112222", tx_id="order-1")
        assert again["status"] == "pending", "the tx_id is free once its verification ended"

    async def test_timers_expire_sessions_on_every_primary(self, api: Api, clock: Any,
                                                           redis_cluster: Cluster) -> None:
        """The timer worker on the cluster: claim per shard, then load_many/commit_many batches."""
        ids = [(await api.start(phone=f"0109999{n:04d}"))["id"] for n in range(24)]
        primaries = {redis_cluster.primary_for_slot(slot_of(api.rt.store.keys.record(v))) for v in ids}
        assert len(primaries) == 3, "these phones' shards fall on every primary"
        assert await api.rt.store.count_timers() == len(ids)
        assert await api.rt.timers.run_once() == 0
        clock.advance(api.rt.settings.sms.session_ttl_s + 1)
        assert await api.rt.timers.run_once() == len(ids)
        for record in await api.rt.store.load_many(ids):
            assert record is not None
            assert (record.status, record.version, record.last_code) == (Status.EXPIRED, 2, "4018")
        assert await api.rt.store.count_timers() == 0
        assert await api.rt.timers.run_once() == 0

    async def test_motp_confirm_updates_the_user_in_the_same_commit(self, api: Api) -> None:
        """An mOTP verification and its user are two hashes in one slot, committed together."""
        app = await enrol(api, "trainee-1")
        vid = await started(api, "trainee-1")
        record = await api.rt.store.load(vid)
        assert record is not None
        assert record.motp_user is not None
        user_key = motp_user_key(api.rt.store.keys, record.motp_user)
        assert slot_of(user_key) == slot_of(api.rt.store.keys.record(vid))
        user_version = int(await api.rt.store.redis.hget(user_key, "version"))
        status, body = await confirm(api, vid, now_code(app, api))
        assert (status, body["status"]) == (200, "verified")
        assert int(await api.rt.store.redis.hget(user_key, "version")) == user_version + 1
        status, body = await confirm(api, await started(api, "trainee-1"), "000000")
        assert status == 422
        assert int(await api.rt.store.redis.hget(user_key, "version")) == user_version + 2, "a failure counted"


    async def test_audit_trail_and_console_counters_on_every_primary(self, api: Api) -> None:
        """The trail, the client's live and outcome counters and the tx_id lookup are written in
        each verification's own slot; the console sums them over shards on every primary."""
        ids = [(await api.start(phone=f"0108888{n:04d}", tx_id=f"c-{n}"))["id"] for n in range(12)]
        for vid in ids[:4]:
            await api.call("POST", f"/v1/verifications/{vid}/cancel")
        status, summary = await api.call("GET", "/v1/console/summary")
        assert status == 200
        assert summary["live"]["by_state"] == [{"channel": "sms", "state": "code_sent", "status": "pending",
                                                "count": 8}]
        status, events = await api.call("GET", f"/v1/verifications/{ids[0]}/events")
        assert [(e["from"], e["to"], e["actor"]) for e in events["events"]] == [
            (None, "code_sent", "client"), ("code_sent", "canceled", "client")]
        status, found = await api.call("GET", "/v1/console/verifications?q=c-0")
        assert [r["verification"]["id"] for r in found["results"]] == [ids[0]]


class TestReplication:
    async def test_wait_after_a_commit_is_acknowledged_by_the_replica(
            self, store_client: RedisCluster, redis_cluster: Cluster) -> None:
        """How the service could opt in to replicated commits: `WAIT 1 1000` after the commit, on
        the same connection (WAIT counts the acknowledgement of that connection's own writes, so
        the commit and the WAIT must share it: here a single-connection client of the slot's
        primary). It returns 1 once the replica has the commit; the replica then serves it."""
        vid = KEYS.new_id(9)
        slot = slot_of(KEYS.record(vid))
        primary = redis_cluster.primary_for_slot(slot)
        (replica_port,) = redis_cluster.replicas_of(primary)
        pinned = aioredis.Redis(host="127.0.0.1", port=primary, single_connection_client=True,
                                socket_timeout=5)
        try:
            store = Store(pinned, KEYS)
            for version in range(5):
                assert (await store.commit(ops(vid, version))).status is OK
                started_at = time.monotonic()
                assert await pinned.wait(1, 1000) == 1
                assert time.monotonic() - started_at < 1.0, "acknowledged, not timed out"
        finally:
            await pinned.aclose()
        with redis_cluster.client(replica_port, single_connection_client=True) as replica:
            replica.execute_command("READONLY")
            assert without_token(replica.hgetall(KEYS.record(vid))) == {b"version": b"5", b"state": b"s5"}
        assert await store_client.hget(KEYS.record(vid), "version") == b"5"  # the cluster client agrees


# ---- failover (last in this file: it leaves one shard without a replica) ----


@dataclass(frozen=True, slots=True)
class Ack:
    nonce: str
    started: float  # time.monotonic() when the commit was sent
    acked: float  # ... and when its OK arrived


@dataclass
class Writer:
    """Commits one verification's versions one after another as the engine does: compare-and-set
    on the last version it saw, and on a conflict takes the current version and goes on. Each
    commit writes a nonce to the record and an outbox entry naming it, in the same script."""

    store: Store
    vid: str
    version: int = 0
    acks: list[Ack] = field(default_factory=list)
    unsure: set[str] = field(default_factory=set)  # the call failed: applied or not, unknown
    failures: list[float] = field(default_factory=list)
    rollbacks: int = 0  # conflicts naming an older version than the one this writer had seen
    conflicts: list[float] = field(default_factory=list)  # when each conflict's call was sent
    unexpected: list[str] = field(default_factory=list)  # errors the store should not raise

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            nonce = f"{self.vid}:{n}"
            entry = orjson.dumps({"kind": "probe", "id": self.vid, "nonce": nonce, "version": self.version + 1})
            commit = ops(self.vid, self.version, fields={"nonce": nonce}, outbox=[entry])
            sent = time.monotonic()
            try:
                result = await asyncio.wait_for(self.store.commit(commit), 5)
            except (RedisError, RedisClusterException, OSError, TimeoutError):
                self.unsure.add(nonce)
                self.failures.append(sent)
                await asyncio.sleep(0.02)
                continue
            except Exception as exc:  # noqa: BLE001 - named in the failure; the writer goes on
                self.unexpected.append(repr(exc))
                self.unsure.add(nonce)
                self.failures.append(sent)
                await asyncio.sleep(0.02)
                continue
            if result.status is OK:
                self.version += 1
                self.acks.append(Ack(nonce, sent, time.monotonic()))
            else:
                assert result.status is CONFLICT
                current = int(result.detail or 0)
                self.conflicts.append(sent)
                self.rollbacks += current < self.version
                self.version = current


async def until(what: str, done: Callable[[], bool], timeout: float,
                state: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting until {what}" + (f": {state()}" if state else ""))
        await asyncio.sleep(0.01)


def stacks_of(tasks: list[asyncio.Task[None]], which: list[bool]) -> list[str]:
    """What each chosen task awaits, outermost first, through the tasks it awaits (wait_for's)."""
    stacks = []
    for task, chosen in zip(tasks, which, strict=True):
        if chosen and task.done():
            stacks.append("cancelled" if task.cancelled() else f"ended: {task.exception()!r}")
            continue
        awaited: Any = task
        names = []
        while chosen and awaited is not None:
            if isinstance(awaited, asyncio.Task):
                awaited = awaited.get_coro()
            frame = getattr(awaited, "cr_frame", None)
            names.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}" if frame else type(awaited).__name__)
            inner = frame.f_locals.get("fut") if frame and frame.f_code.co_name == "wait_for" else None
            awaited = inner if isinstance(inner, asyncio.Task) else getattr(awaited, "cr_await", None)
        stacks.append(" > ".join(names))
    return stacks


@dataclass(frozen=True, slots=True)
class Failover:
    killed_at: float
    promoted_at: float
    new_primary: int


async def kill_under_load(cluster: Cluster, victim: int, writers: list[Writer]) -> Failover:
    """Writers commit; at 100 commits each the victim is killed; after its replica's promotion
    every writer must commit 20 more times. All bounded."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in writers]
    try:
        await until("every writer committed 100 times", lambda: all(len(w.acks) >= 100 for w in writers), 60)
        killed_at = time.monotonic()
        cluster.kill(victim)
        new_primary = await asyncio.to_thread(cluster.wait_failover, victim, 30)
        promoted_at = time.monotonic()

        def committed_since() -> list[int]:
            return [sum(a.started > promoted_at for a in w.acks) for w in writers]

        def answering_again() -> bool:
            return all(n >= 20 for n in committed_since())

        # Bounded, with room for a loaded machine (the whole suite on two cores): the failing
        # message names each writer's commits since, and its failed calls.
        await until("every writer committed 20 times after the failover", answering_again, 120,
                    state=lambda: {"committed": committed_since(),
                                   "failed": [sum(t > promoted_at for t in w.failures) for w in writers],
                                   "conflicts": [sum(t > promoted_at for t in w.conflicts) for w in writers],
                                   "stuck": stacks_of(tasks, [n < 20 for n in committed_since()]),
                                   "unexpected": [w.unexpected[-3:] for w in writers]})
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
    assert all(t.exception() is None for t in tasks)
    assert not any(w.unexpected for w in writers), [w.unexpected[:3] for w in writers]
    return Failover(killed_at, promoted_at, new_primary)


async def surviving(client: RedisCluster, w: Writer, killed_at: float) -> set[str]:
    """The nonces of the writer's commits that survived, each a whole commit: the outbox holds
    exactly versions 1..N, N the record's version, the record the last one's nonce; none that
    no commit wrote; every commit sent after the kill (so acknowledged by the promoted primary)."""
    stream: Any = await client.xrange(KEYS.outbox(shard_in(w.vid)))
    mine = [entry for entry in (orjson.loads(fields[b"e"]) for _, fields in stream) if entry["id"] == w.vid]
    held: Any = await client.hgetall(KEYS.record(w.vid))
    assert [e["version"] for e in mine] == list(range(1, int(held[b"version"]) + 1)), \
        "each surviving commit wrote its record and its outbox entry together, in version order"
    assert held[b"nonce"].decode() == mine[-1]["nonce"]
    found = {e["nonce"] for e in mine}
    assert found <= {a.nonce for a in w.acks} | w.unsure, "no entry that no commit wrote"
    assert all(a.nonce in found for a in w.acks if a.started > killed_at), \
        "a commit acknowledged by the promoted primary is kept"
    return found


async def replicas_acknowledging(port: int, shard: int, timeout_ms: int) -> int:
    """A commit, then `WAIT 1 timeout_ms` on the same connection to the primary at `port`."""
    pinned = aioredis.Redis(host="127.0.0.1", port=port, single_connection_client=True, socket_timeout=5)
    try:
        assert (await Store(pinned, KEYS).commit(ops(KEYS.new_id(shard), 0))).status is OK
        return int(await pinned.wait(1, timeout_ms))
    finally:
        await pinned.aclose()


async def test_a_primary_killed_under_concurrent_commits_fails_over(
        redis_cluster: Cluster, record_property: Callable[[str, object], None]) -> None:
    """SIGKILL the primary serving some verifications' slots while 8 writers commit (4 on that
    primary, 4 on the others); its replica is promoted; the store answers again.

    Redis replicates asynchronously: the primary runs the script, answers OK, and streams the
    script's writes (one MULTI/EXEC unit) to its replica afterwards. A commit acknowledged in
    the last moment before the kill may not have reached the replica, and then the promoted
    replica does not have it: acknowledged, yet lost. What is lost is whole commits at the tail
    (a record and its outbox entries always together, never one without the other), and the
    writer's next compare-and-set finds an older version and decides again; but an effect of a
    lost commit may already have been performed, and a client may have been told a state the
    store no longer holds. So the test does not assert that nothing acknowledged was lost: it
    counts the commits acknowledged before the kill and those found after failover (by the
    nonce each commit wrote into its outbox entry, which later commits cannot overwrite),
    prints both, and asserts what does hold: no torn or invented commit, nothing lost on the
    other primaries or after the kill, and new commits on the failed-over slots within a
    bounded time.

    On loopback the replica trails its primary by microseconds, so the count lost is usually 0
    (a few hundred commits acknowledged before the kill, all found); nothing guarantees it.

    `WAIT 1 <ms>` after each commit (on the commit's connection) would hold the reply until the
    replica acknowledged the commit, so one primary's death could no longer lose an
    acknowledged commit: the replica that is promoted (with one replica per primary, the only
    one that can be) has it. It costs a replication round trip per commit, and is no
    transaction: on a timeout it answers 0 and the write stays on the primary (still losable),
    so the service would have to treat 0 as "not yet durable". With the replica gone, as after
    this failover, every WAIT times out and answers 0.
    """
    # The service's own client (its connection class, its retries), with a 1 s socket timeout.
    client, _ = connect(redis_cluster.url, StoreOptions(socket_timeout_s=1, connect_timeout_s=1))
    try:
        await client.flushall()
        store = Store(client, KEYS)
        victim = redis_cluster.primary_for_slot(shard_slot(0))
        on_victim = [s for s in range(KEYS.shards) if redis_cluster.primary_for_slot(shard_slot(s)) == victim]
        hit = [Writer(store, KEYS.new_id(shard)) for shard in on_victim[:4]]
        spared = [Writer(store, KEYS.new_id(shard)) for shard in range(KEYS.shards) if shard not in on_victim][:4]
        failover = await kill_under_load(redis_cluster, victim, hit + spared)
        found = {w.vid: await surviving(client, w, failover.killed_at) for w in hit + spared}
    finally:
        await client.aclose()
    for w in spared:
        assert all(a.nonce in found[w.vid] for a in w.acks), "the other primaries lost nothing"
    # The promoted primary has no replica left: a WAIT after a commit times out and answers 0.
    without_replica = await replicas_acknowledging(failover.new_primary, on_victim[0], 200)

    # Acknowledged commits sent before the kill (a reply read just after it counts too).
    before = [(w.vid, a) for w in hit for a in w.acks if a.started <= failover.killed_at]
    kept = [a for vid, a in before if a.nonce in found[vid]]
    recovery_s = min(a.acked for w in hit for a in w.acks if a.started > failover.killed_at) - failover.killed_at
    numbers = {
        "acknowledged_before_kill": len(before), "found_after_failover": len(kept),
        "lost": len(before) - len(kept), "unsure_calls": sum(len(w.unsure) for w in hit),
        "unsure_applied": sum(len(w.unsure & found[w.vid]) for w in hit),
        "rollbacks_seen": sum(w.rollbacks for w in hit),
        "failover_s": round(failover.promoted_at - failover.killed_at, 2),
        "first_commit_after_kill_s": round(recovery_s, 2),
        "failed_calls_on_other_primaries": sum(t > failover.killed_at for w in spared for t in w.failures),
        "wait_without_replica": without_replica,
    }
    print("failover:", " ".join(f"{k}={v}" for k, v in numbers.items()))  # noqa: T201
    for name, value in numbers.items():
        record_property(name, value)

    assert len(before) >= 400
    for w in hit + spared:  # a writer finds an older version only where a commit it saw was lost
        assert w.rollbacks == 0 or ({a.nonce for a in w.acks} | w.unsure) - found[w.vid]
    assert all(w.rollbacks == 0 for w in spared)
    assert failover.promoted_at - failover.killed_at < 30
    assert 0 < recovery_s < 30, "the failed-over slots take commits again within a bounded time"
    assert without_replica == 0
