"""The service on a real Redis Cluster (3 primaries + 3 replicas), as separate processes: two
`api`, two `worker` and the simulator. The four channels run end to end while the primary
serving some shards is SIGKILLed and its replica promoted.

Asserted: no answer is a 500 (a request the failing slot cannot serve is a 503 `9999` with
`Retry-After`, and the client retries it, as that header says); every flow completes, those
on the failed-over slots too; every verification answered 201 is still there; timers
(session expiry) and the outbox (codes, calls, pushes) resume; nothing is left in the outbox.

What asynchronous replication can lose: a commit the old primary acknowledged in the last
moment before its death, not yet streamed to its replica (on loopback the replica trails by
microseconds, so the count is usually 0; `test_cluster_store` measures it under load, and says
what `WAIT` would buy).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from tests.cluster import Cluster
from tests.conftest import free_port, start_body
from tests.test_cluster_store import KEYS, shard_slot
from tests.test_processes import Process, processes, wait_ready  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
KEY = "cluster-faults-key-01"
FLOW_TIMEOUT_S = 40
SESSION_TTL_S = 12


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A cluster of this module's own: the failover leaves a primary without a replica."""
    started = Cluster().start()
    try:
        yield started
    finally:
        started.stop()


class Client:
    """A merchant backend and a user: each call is retried on 503 after its Retry-After."""

    def __init__(self, session: aiohttp.ClientSession, apis: list[str], sim: str) -> None:
        self.session = session
        self.apis = apis
        self.sim = sim
        self.statuses: Counter[int] = Counter()
        self.accepted: dict[str, str] = {}  # verification id -> channel
        self.turn = 0

    async def call(self, method: str, path: str, body: Any = None, *, key: str | None = None,
                   ok_after_retry: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One API call, on the next API process; 503s (and a key still held, 409 3003) are retried
        until FLOW_TIMEOUT_S."""
        headers = {"Authorization": f"Bearer {KEY}"}
        if key:
            headers["Idempotency-Key"] = key
        deadline = time.monotonic() + FLOW_TIMEOUT_S
        retried = False
        while True:
            self.turn += 1
            base = self.apis[self.turn % len(self.apis)]
            async with self.session.request(method, base + path, json=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                self.statuses[resp.status] += 1
                if key and resp.status == 409 and answer["error"]["code"] == "3003":
                    # An earlier try of this key still holds it: its lease outlives the outage that
                    # kept it from giving the key back. Retried, as the answer asks.
                    wait_s = 0.2
                elif resp.status != 503:
                    if retried and resp.status in ok_after_retry:
                        return 200, answer
                    return resp.status, answer
                else:
                    assert answer["error"]["code"] == "9999"
                    wait_s = float(resp.headers["Retry-After"])
            retried = True
            assert time.monotonic() < deadline, f"{method} {path} still 503 after {FLOW_TIMEOUT_S}s"
            await asyncio.sleep(min(wait_s, 0.2))

    async def sim_get(self, path: str, pick: Any) -> Any:
        deadline = time.monotonic() + FLOW_TIMEOUT_S
        while time.monotonic() < deadline:
            async with self.session.get(self.sim + path) as resp:
                found = pick(await resp.json())
            if found:
                return found
            await asyncio.sleep(0.05)
        pytest.fail(f"the simulator never showed {path}")

    async def sim_post(self, path: str, body: Any = None) -> Any:
        async with self.session.post(self.sim + path, json=body) as resp:
            return await resp.json()

    async def start(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        status, started = await self.call("POST", "/v1/verifications", body, key=key)
        assert status == 201, started
        self.accepted[started["id"]] = body["channel"]
        return dict(started)

    async def verified(self, vid: str, body: dict[str, Any]) -> str:
        status, answer = await self.call("POST", f"/v1/verifications/{vid}/confirm", body)
        assert (status, answer.get("status")) == (200, "verified"), answer
        return str(answer["key_token"])

    async def redeem(self, vid: str, token: str) -> None:
        # a redeem applied but answered 503 is 4000 when retried: it was redeemed
        status, answer = await self.call("POST", "/v1/results", {"key_token": token}, key=f"redeem-{vid}",
                                         ok_after_retry=(409,))
        assert status == 200, answer

    # ---- one flow per channel ----

    async def sms(self, phone: str) -> None:
        started = await self.start(start_body(phone), f"start-{phone}")
        code = await self.sim_get(f"/sim/sms?phone={phone}",
                                  lambda b: b["messages"] and b["messages"][-1]["code"])
        await self.redeem(started["id"], await self.verified(started["id"], {"code": code}))

    async def ars(self, phone: str) -> None:
        started = await self.start(start_body(phone, channel="ars"), f"start-{phone}")
        vid = started["id"]
        for _ in range(3):
            await self.sim_get(f"/sim/ars/{phone}", lambda b: any(c["state"] == "ringing" for c in b["calls"]))
            status, answer = await self.call("GET", f"/v1/verifications/{vid}")
            keyed = await self.sim_post(f"/sim/ars/{phone}/keypad", {"digits": answer["display_code"]})
            if keyed["webhook_status"] == 200:
                break
            # the simulator reports once: its report met the failover; the user asks for a new call
            status, answer = await self.call("POST", f"/v1/verifications/{vid}/resend")
            assert status == 200, answer
        await self.redeem(vid, await self.verified(vid, {}))

    async def pass_(self, phone: str) -> None:
        for attempt in range(3):
            started = await self.start(start_body(phone, channel="pass"), f"start-{phone}-{attempt}")
            await self.sim_get(f"/sim/pass/{phone}", lambda b: any(p["state"] == "waiting" for p in b["pushes"]))
            approved = await self.sim_post(f"/sim/pass/{phone}/approve")
            if approved["webhook_status"] == 200:
                await self.redeem(started["id"], await self.verified(started["id"], {}))
                return
            # the report met the failover and is not sent again: cancel, and start over
            await self.call("POST", f"/v1/verifications/{started['id']}/cancel")
        pytest.fail(f"no PASS approval of {phone} reached the service")

    async def motp(self, phone: str) -> None:
        user_id = f"user-{phone}"
        status, enrolled = await self.call("POST", "/v1/motp/users", {"user_id": user_id, "name": "홍길동",
                                                                      "phone": phone}, key=f"enrol-{phone}")
        assert status == 201, enrolled
        app = pyotp.parse_uri(enrolled["otpauth_uri"])
        body = {"channel": "motp", "motp_user_id": user_id, "subject": {"name": "홍길동", "phone": phone}}
        started = await self.start(body, f"start-{phone}")
        await self.redeem(started["id"], await self.verified(started["id"], {"code": app.now()}))


async def test_the_four_channels_run_through_a_primary_failover(cluster: Cluster, processes, subprocess_env,  # noqa: F811 - the fixture
                                                                 tmp_path: Path) -> None:
    victim = cluster.primary_for_slot(shard_slot(0))
    entry = next(port for port in cluster.alive_ports if port != victim and port not in cluster.replicas_of(victim))
    sim_port, api_ports = free_port(), [free_port(), free_port()]
    config = tmp_path / "veriflow.yaml"
    config.write_text(
        f"channels: {{sms: {{session_ttl_s: {SESSION_TTL_S}}}}}\ntimers: {{poll_interval_ms: 50}}\n"
        "outbox: {retry_idle_ms: 500, block_ms: 100}\nstore: {socket_timeout_s: 1}\n", encoding="utf-8")
    env = {**subprocess_env, "VERIFLOW_REDIS_URL": f"redis+cluster://127.0.0.1:{entry}",
           "VERIFLOW_CONFIG": str(config), "VERIFLOW_API_KEYS": f"acme:{KEY}",
           "VERIFLOW_SECRET_KEY": "cluster-faults-secret-0123456789abcdef",
           "VERIFLOW_PROVIDER_SECRET": "cluster-faults-provider-secret-0123",
           "VERIFLOW_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}/sim",
           "VERIFLOW_WEBHOOK_URL": f"http://127.0.0.1:{api_ports[0]}/v1/providers/simulator/events"}
    simulator = Process(["simulator", "--port", str(sim_port)], env, tmp_path / "sim.log")
    apis = [Process(["api", "--port", str(port)], env, tmp_path / f"api{n}.log") for n, port in enumerate(api_ports)]
    workers = [Process(["worker"], env, tmp_path / f"worker{n}.log") for n in range(2)]
    processes += [simulator, *apis, *workers]
    bases = [f"http://127.0.0.1:{port}" for port in api_ports]
    await wait_ready(f"http://127.0.0.1:{sim_port}", simulator, "/sim/sms?phone=01000000000")
    for base, api in zip(bases, apis, strict=True):
        await wait_ready(base, api, "/readyz")

    async with aiohttp.ClientSession() as session:
        client = Client(session, bases, f"http://127.0.0.1:{sim_port}")
        flows = (client.sms, client.ars, client.pass_, client.motp)
        numbered = iter(range(10_000))

        async def round_of_flows() -> None:
            await asyncio.gather(*(flow(f"0103{next(numbered):07d}") for flow in flows))

        # expiring: SMS verifications nobody confirms, started before the kill
        expiring = [(await client.start(start_body(f"0104{n:07d}"), f"expiring-{n}"))["id"] for n in range(8)]
        await round_of_flows()  # the service works
        load = asyncio.create_task(_rounds(round_of_flows))
        await asyncio.sleep(1)
        killed_at = time.monotonic()
        cluster.kill(victim)
        await asyncio.to_thread(cluster.wait_failover, victim, 30)
        failover_s = time.monotonic() - killed_at
        await asyncio.sleep(2)
        load.cancel()
        completed_during = await _stopped(load)
        for _ in range(2):  # after the failover, on every slot again
            await round_of_flows()
        await asyncio.sleep(max(0.0, SESSION_TTL_S + 3 - (time.monotonic() - killed_at)))
        statuses = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            statuses = {vid: (await client.call("GET", f"/v1/verifications/{vid}"))[1].get("status")
                        for vid in expiring}
            if set(statuses.values()) == {"expired"}:
                break
            await asyncio.sleep(0.5)
        lost = [vid for vid in client.accepted if (await client.call("GET", f"/v1/verifications/{vid}"))[0] != 200]
    left = await _outbox_left(cluster)
    for process in (*apis, *workers):
        assert process.popen.poll() is None, process.output()
    logs = "".join(process.output() for process in (*apis, *workers))
    print(f"\nfailover: {failover_s:.1f}s; answers {dict(client.statuses)}; flows completed during "  # noqa: T201
          f"the failover {completed_during * 4}; accepted {len(client.accepted)}, lost {len(lost)}")
    assert 500 not in client.statuses, "no 500, ever"
    assert set(client.statuses) <= {200, 201, 409, 503}
    assert lost == [], "every verification answered 201 is still there"
    assert set(statuses.values()) == {"expired"}, "the timers of the failed-over slots fired"
    assert left == 0, "the outbox is empty: every effect was performed and acknowledged"
    assert "Traceback" not in logs


async def _rounds(round_of_flows: Any) -> int:
    done = 0
    try:
        while True:
            await round_of_flows()
            done += 1
    except asyncio.CancelledError:
        return done


async def _stopped(task: asyncio.Task[int]) -> int:
    return await task


async def _outbox_left(cluster: Cluster) -> int:
    client = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes])
    try:
        deadline = time.monotonic() + 15
        while True:
            left = sum([int(await client.xlen(KEYS.outbox(shard))) for shard in range(KEYS.shards)])
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
