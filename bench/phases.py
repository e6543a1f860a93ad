"""The phases of a run: load against veriflow and the baseline, timers at scale, memory."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import procs, seed
from bench.procs import HOST, Processes
from bench.stats import compare, percentile, ratio
from machines.vocabulary import Channel
from service.store.keys import Keys


@dataclass
class Stack:
    """The long-lived processes of a run and how to reach them."""

    processes: Processes
    redis_url: str
    simulator_url: str
    workdir: Path
    options: Any
    next_phone: int = 0
    results: dict[str, Any] = field(default_factory=dict)

    def env(self, config: Path | None = None) -> dict[str, str]:
        return procs.service_env(self.redis_url, self.simulator_url, config)

    def phones(self, count: int) -> list[str]:
        first, self.next_phone = self.next_phone, self.next_phone + count
        return [seed.plain_phone(n) for n in range(first, first + count)]


def load_spec(kind: str, scenario: str, targets: list[str], items: list[dict[str, Any]], concurrency: int,
              options: Any, inbox_url: str = "") -> dict[str, Any]:
    """The load generator's instructions for one measurement."""
    return {
        "kind": kind, "scenario": scenario, "targets": targets, "items": items,
        "concurrency": concurrency, "max_requests": len(items), "max_seconds": options.seconds,
        "api_key": procs.API_KEY, "inbox_url": inbox_url, "uvloop": True,
    }


def run_load(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=stack.workdir, delete=False) as handle:
        json.dump(spec, handle)
    done = subprocess.run([sys.executable, "-m", "bench.load", handle.name], cwd=procs.ROOT,
                          env=stack.env(), capture_output=True, timeout=spec["max_seconds"] + 60, check=False)
    Path(handle.name).unlink()
    if done.returncode != 0:
        msg = f"load generator failed: {done.stderr.decode()[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def start_apis(stack: Stack, kind: str, count: int) -> tuple[list[str], list[subprocess.Popen[bytes]]]:
    """`count` veriflow API processes (or baseline apps) on one port, sharing it with
    SO_REUSEPORT: veriflow as `api --workers N`, the baseline as N processes started alike."""
    port = procs.free_port()
    started = []
    if kind == "veriflow":
        args = procs.service_args("api", port) + (["--workers", str(count)] if count > 1 else [])
        started.append(stack.processes.start(f"{kind}-api-{count}", args, stack.env(), port))
    else:
        for n in range(count):
            args = [sys.executable, "-m", "bench.baseline", "--port", str(port), "--redis", stack.redis_url]
            args += ["--reuse-port"] if count > 1 else []
            started.append(stack.processes.start(f"{kind}-api-{count}-{n}", args, stack.env(), port))
    if count > 1:
        time.sleep(1)  # the port answers once the first process listens: let the others bind too
    return [f"http://{HOST}:{port}"], started


async def seed_confirms(stack: Stack, count: int) -> list[tuple[str, str]]:
    """`count` fresh live SMS verifications; their outbox entries are dropped (see seed.py)."""
    rt = await seed.runtime(stack.env())
    try:
        now = int(time.time() * 1000)
        made = await seed.create_many(rt, [now] * count, first_index=stack.next_phone)
        stack.next_phone += count
        await seed.drop_outboxes(rt)
        await asyncio.sleep(min(1.0, count / 2000))  # let the dispatcher finish what it took before the trim
    finally:
        await rt.close()
    return made


def confirm_items(made: list[tuple[str, str]], outcome: str) -> list[dict[str, Any]]:
    """Wrong codes: each verification takes two (3 -> 2 -> 1 attempts left), each a commit of the
    same shape. Right codes: one each (the verification becomes verified)."""
    rounds = 2 if outcome == "wrong" else 1
    wrong = lambda code: f"{(int(code) + 1) % 10**6:06d}"  # noqa: E731
    return [{"id": vid, "code": wrong(code) if outcome == "wrong" else code, "outcome": outcome}
            for _ in range(rounds) for vid, code in made]


def measure_load(stack: Stack, api_counts: list[int], concurrencies: list[int]) -> list[dict[str, Any]]:
    """Every scenario against veriflow and the baseline: 1 and 2 API processes, each concurrency.
    Each pair is measured `repeat` times, alternating which goes first; the best throughput of
    each is kept (other work on a shared machine only ever slows a run down)."""
    options = stack.options
    rows = []
    for api_count in api_counts:
        for concurrency in concurrencies:
            for scenario in options.scenarios:
                row: dict[str, Any] = {"scenario": scenario, "api_processes": api_count,
                                       "concurrency": concurrency, "runs": {"baseline": [], "veriflow": []}}
                for repeat in range(options.repeat):
                    for kind in ("baseline", "veriflow") if repeat % 2 == 0 else ("veriflow", "baseline"):
                        row["runs"][kind].append(measure_once(stack, kind, scenario, api_count, concurrency))
                for kind in ("baseline", "veriflow"):
                    row[kind] = max(row["runs"][kind], key=lambda run: run["rps"])
                row["ratio"] = compare(row["veriflow"], row["baseline"])
                row["ratio"]["api_cpu_per_request"] = ratio(row["veriflow"]["api_cpu_ms_per_request"],
                                                            row["baseline"]["api_cpu_ms_per_request"])
                print(f"  {scenario:14} api={api_count} c={concurrency:<3} "
                      f"baseline {row['baseline']['rps']:>8.1f}/s p99 {row['baseline']['p99_ms']:>7.2f} ms | "
                      f"veriflow {row['veriflow']['rps']:>8.1f}/s p99 {row['veriflow']['p99_ms']:>7.2f} ms | "
                      f"ratio {row['ratio']['rps']}", flush=True)
                rows.append(row)
    return rows


def measure_once(stack: Stack, kind: str, scenario: str, api_count: int, concurrency: int) -> dict[str, Any]:
    bases, started = start_apis(stack, kind, api_count)
    try:
        mode = scenario.split("-", maxsplit=1)[0]
        inbox = stack.simulator_url + "/sms"
        if stack.options.warmup:  # fresh processes: their pools, caches and code paths warm up first
            warmup = scenario_items(stack, scenario, stack.options.warmup)
            run_load(stack, load_spec(kind, mode, bases, warmup, concurrency, stack.options, inbox_url=inbox))
        items = scenario_items(stack, scenario, stack.options.requests)
        spec = load_spec(kind, mode, bases, items, concurrency, stack.options, inbox_url=inbox)
        asyncio.run(settle_store(stack.redis_url))
        ours_before = own_cpu_seconds(stack)
        api_before = sum(procs.cpu_seconds(p.pid) for p in started)
        busy_before = procs.machine_busy_seconds()
        calls_before = command_calls(stack.redis_url)
        result = run_load(stack, spec)
        result["redis_commands_per_request"] = client_commands(
            calls_before, command_calls(stack.redis_url), result["requests"])
        api_cpu = sum(procs.cpu_seconds(p.pid) for p in started) - api_before
        result["api_cpu_ms_per_request"] = round(api_cpu * 1000 / max(result["requests"], 1), 4)
        # CPU that processes of this run did not use: other work on the machine during the run.
        result["foreign_cpu_s"] = round(
            procs.machine_busy_seconds() - busy_before - (own_cpu_seconds(stack) - ours_before), 2)
    finally:
        for process in started:
            stack.processes.stop_one(process)
    return result


CLIENT_COMMANDS = ("hgetall", "evalsha", "xreadgroup", "xack", "xdel")


def client_commands(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    """Commands sent by the service's clients per request (a flow: per whole flow), from INFO
    commandstats. Commands run inside scripts are left out, and so are the timer worker's idle
    claims (one EVALSHA running one ZRANGEBYSCORE each, per shard every poll)."""
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in (*CLIENT_COMMANDS, "zrangebyscore")}
    delta["evalsha"] -= delta.pop("zrangebyscore")
    return {name: round(count / max(requests, 1), 2) for name, count in delta.items()}


def own_cpu_seconds(stack: Stack) -> float:
    """CPU used so far by this run: its live processes, the finished load generators, itself."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    live = sum(procs.cpu_seconds(p.pid) for p in stack.processes.started if p.poll() is None)
    return live + children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime


def scenario_items(stack: Stack, scenario: str, requests: int) -> list[dict[str, Any]]:
    if scenario in {"flow", "start"}:
        return [{"phone": phone} for phone in stack.phones(requests)]
    outcome = scenario.split("-")[1]  # confirm-wrong, confirm-right
    count = requests // 2 if outcome == "wrong" else requests
    return confirm_items(asyncio.run(seed_confirms(stack, count)), outcome)


# The carrier calls each step makes from the API process (the SMS itself is sent by the worker).
STEP_CALLS = {"start": ("subscriber_check",), "confirm-right": ("addon_check",), "confirm-wrong": (),
              "flow": ("subscriber_check", "addon_check")}


def measure_provider_calls(stack: Stack, calls: int) -> dict[str, Any]:
    """CPU per carrier call on the API's side (bench/calls.py), at the saturating concurrency."""
    spec = {"simulator_url": stack.simulator_url, "secret": procs.PROVIDER_SECRET, "calls": calls,
            "concurrency": stack.options.concurrency}
    path = stack.workdir / "calls.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "bench.calls", str(path)], cwd=procs.ROOT, env=stack.env(),
                          capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        msg = f"provider calls failed: {done.stderr.decode()[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def steps_without_calls(load: list[dict[str, Any]], calls: dict[str, Any]) -> list[dict[str, Any]]:
    """veriflow's API CPU per step (per whole flow) at saturation, with its provider calls as
    measured and without them (less the client-side CPU of those calls)."""
    rows = []
    for row in load:
        if row["concurrency"] == 1 or row["scenario"] not in STEP_CALLS:
            continue
        with_calls = row["veriflow"]["api_cpu_ms_per_request"]
        names = STEP_CALLS[row["scenario"]]
        in_calls = sum(calls[f"{name}_cpu_ms"] for name in names)
        rows.append({"step": row["scenario"], "api_processes": row["api_processes"], "provider_calls": list(names),
                     "cpu_ms_with_calls": with_calls, "cpu_ms_in_calls": round(in_calls, 4),
                     "cpu_ms_without_calls": round(with_calls - in_calls, 4),
                     "baseline_cpu_ms": row["baseline"]["api_cpu_ms_per_request"]})
    return rows


def timers_config(workdir: Path, session_ttl_s: int) -> Path:
    path = workdir / "timers.yaml"
    path.write_text(f"channels:\n  sms: {{session_ttl_s: {session_ttl_s}}}\n")
    return path


async def _redis_info(url: str, section: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    try:
        info: dict[str, Any] = await client.info(section)
        return info
    finally:
        await client.aclose()


def measure_timers(stack: Stack, count: int, spread_s: float, session_ttl_s: int = 60) -> dict[str, Any]:
    """`count` live verifications whose sessions end within `spread_s` (< 60 s) of each other,
    fired by the real timer worker (`python -m service worker`) in its own process."""
    config = timers_config(stack.workdir, session_ttl_s)
    env = stack.env(config)
    asyncio.run(_flush(stack.redis_url))  # only these verifications' timers may be pending
    seeding_s = count / stack.options.seed_rate
    first_deadline = time.time() + seeding_s + 5
    deadlines = [int((first_deadline + spread_s * n / count) * 1000) for n in range(count)]
    before = asyncio.run(_redis_info(stack.redis_url, "memory"))["used_memory"]
    started = time.monotonic()
    made = asyncio.run(_seed_timers(env, deadlines, session_ttl_s, stack.next_phone))
    stack.next_phone += count
    seeded_s = time.monotonic() - started
    after = asyncio.run(_redis_info(stack.redis_url, "memory"))["used_memory"]
    margin_s = first_deadline - time.time()
    worker = stack.processes.start("timer-worker", procs.service_args("worker"), env)
    calls_before = _hgetall_calls(stack.redis_url)
    time.sleep(max(first_deadline - time.time() - 1, 0))
    cpu_before = procs.cpu_seconds(worker.pid)
    left = asyncio.run(_wait_for_timers(stack.redis_url, spread_s + 60))
    cpu_after = procs.cpu_seconds(worker.pid)
    fired = _hgetall_calls(stack.redis_url) - calls_before
    stack.processes.stop_one(worker)
    outcome = asyncio.run(_expiry_outcome(stack.redis_url, [vid for vid, _ in made]))
    lags = outcome.pop("lags_ms")
    cpu = cpu_after - cpu_before
    return {
        "verifications": count, "spread_s": spread_s, "seeding_s": round(seeded_s, 1),
        "seeding_margin_s": round(margin_s, 1),
        "lag_ms": {"p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": max(lags, default=0)},
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_s_per_1000": round(cpu * 1000 / count, 3),
        "timer_fires": fired, "timers_left": left, **outcome,
        "exactly_once": fired == count and left == 0 and outcome["expired_once"] == count,
        "used_memory_growth_per_verification": round((after - before) / count, 1),
    }


async def _flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def _seed_timers(env: dict[str, str], deadlines: list[int], session_ttl_s: int,
                       first_index: int) -> list[tuple[str, str]]:
    rt = await seed.runtime(env)
    try:
        made = await seed.create_many(rt, [d - session_ttl_s * 1000 for d in deadlines],
                                      first_index=first_index)
        await seed.drop_outboxes(rt, delete=True)  # the worker starts afterwards
    finally:
        await rt.close()
    return made


def _hgetall_calls(url: str) -> int:
    return command_calls(url).get("hgetall", 0)


KEYS = Keys(16)  # the service's default shards, which every process of a run uses
SETTLE_TIMEOUT_S = 60


async def settle_store(url: str) -> None:
    """Before the clock starts: the timers earlier measurements left are dropped, and the SMS they
    left the dispatcher are sent. Their verifications' sessions end minutes later, so the worker
    used to expire them in the middle of a later measurement, on whichever side ran then: in
    one full run's two-process rows, up to 0.5 more `HGETALL` and `EVALSHA` per request. A
    verification left without its timer is never expired; its record still goes at its TTL."""
    client = aioredis.Redis.from_url(url)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    try:
        await client.delete(*[KEYS.timers(shard) for shard in range(KEYS.shards)])
        while sum([await client.xlen(key) for key in KEYS.all_outboxes()]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def command_calls(url: str) -> dict[str, int]:
    """How many times Redis ran each command so far (INFO commandstats)."""
    stats = asyncio.run(_redis_info(url, "commandstats"))
    return {name.removeprefix("cmdstat_").lower(): int(value["calls"]) for name, value in stats.items()}


async def _wait_for_timers(url: str, timeout_s: float) -> int:
    """Wait until every timer set is empty (or the time is up); the number of timers left."""
    client = aioredis.Redis.from_url(url)
    keys = [KEYS.timers(shard) for shard in range(KEYS.shards)]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = sum([await client.zcard(key) for key in keys])
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.25)
    finally:
        await client.aclose()


async def _expiry_outcome(url: str, ids: list[str]) -> dict[str, Any]:
    """Read every record back: expired at which lag, and through exactly one commit (version 2:
    created, then expired)."""
    client = aioredis.Redis.from_url(url)
    lags, expired_once, other = [], 0, 0
    try:
        for first in range(0, len(ids), 1000):
            pipe = client.pipeline(transaction=False)
            for vid in ids[first:first + 1000]:
                pipe.hmget(f"vf:{{{int(vid[:4], 16)}}}:v:{vid}", "status", "version", "expires_at", "ended_at")
            for status, version, expires_at, ended_at in await pipe.execute():
                if status == b"expired" and version == b"2":
                    expired_once += 1
                    lags.append(int(ended_at) - int(expires_at))
                else:
                    other += 1
    finally:
        await client.aclose()
    return {"expired_once": expired_once, "not_expired_once": other, "lags_ms": lags}


async def measure_memory(stack: Stack, sample: int) -> dict[str, Any]:
    """Bytes per live SMS verification: MEMORY USAGE of its keys (record hash, audit trail, its share
    of the shard's timer set and of its client's live counters, its tx_id claim and tx_id lookup if
    it has one) and `used_memory` growth; with the
    recommended hash-max-listpack-value (256, see procs.redis_args), then on smaller samples with
    a tx_id and with Redis's default (64)."""
    rt = await seed.runtime(stack.env())
    small = max(sample // 10, 1000)
    try:
        return {
            "sms": await _memory_sample(stack, rt, sample, listpack_value=256, tx_id=False),
            "sms_with_tx_id": await _memory_sample(stack, rt, small, listpack_value=256, tx_id=True),
            "sms_with_redis_defaults": await _memory_sample(stack, rt, small, listpack_value=64, tx_id=False),
            **{channel.value: await _memory_sample(stack, rt, small, listpack_value=256, tx_id=False,
                                                   channel=channel)
               for channel in (Channel.ARS, Channel.PASS, Channel.MOTP)},
        }
    finally:
        await rt.store.redis.config_set("hash-max-listpack-value", 256)
        await rt.close()


async def _memory_sample(stack: Stack, rt: Any, sample: int, *, listpack_value: int, tx_id: bool,
                         channel: Channel = Channel.SMS) -> dict[str, Any]:
    """One channel's live verifications; an mOTP user's own hash (it outlives its verifications)
    is reported apart, as `motp_user`, and not counted in the verification's total."""
    client = rt.store.redis
    await client.flushall()
    await client.config_set("hash-max-listpack-value", listpack_value)
    before = (await client.info("memory"))["used_memory"]
    now = int(time.time() * 1000)
    made = await seed.create_many(rt, [now] * sample, tx_id=tx_id, first_index=stack.next_phone,
                                  channel=channel)
    stack.next_phone += sample
    await seed.drop_outboxes(rt, delete=True)  # delivered SMS leave nothing behind
    keys = rt.store.keys
    users = [k async for k in client.scan_iter("vf:*:motp:*", count=1000)]
    user_bytes = sum([await client.memory_usage(k, samples=0) or 0 for k in users[:1000]])
    per_user = user_bytes / max(min(len(users), 1000), 1) if users else 0.0
    growth = ((await client.info("memory"))["used_memory"] - before) / sample - per_user
    probe = made[:: max(len(made) // 1000, 1)]
    records = [await client.memory_usage(keys.record(vid), samples=0) for vid, _ in probe]
    timers = sum([await client.memory_usage(k, samples=0) or 0 for k in keys.all_timers()])
    claims = [k async for k in client.scan_iter("vf:*:tx:*", count=1000)]
    claim_bytes = sum([await client.memory_usage(k, samples=0) or 0 for k in claims[:1000]])
    lookups = [k async for k in client.scan_iter("vf:*:txv:*", count=1000)]
    lookup_bytes = sum([await client.memory_usage(k, samples=0) or 0 for k in lookups[:1000]])
    counters = [k async for k in client.scan_iter("vf:*:live:*", count=1000)]
    counter_bytes = sum([await client.memory_usage(k, samples=0) or 0 for k in counters])
    encoding = (await client.object("encoding", keys.record(made[0][0]))).decode()
    record = sum(records) / len(records)
    per_timer = timers / sample
    per_claim = claim_bytes / max(min(len(claims), 1000), 1) + lookup_bytes / max(min(len(lookups), 1000), 1)
    # The audit trail is fields of the record (its creation's event, here), counted in the record's
    # MEMORY USAGE; shown apart as the bytes of their names and values.
    raws = [await client.hgetall(keys.record(vid)) for vid, _ in probe]
    trail = sum(len(k) + len(v) for raw in raws for k, v in raw.items() if k.startswith(b"@")) / len(raws)
    per_counter = counter_bytes / sample  # the client's live counters: a few small hashes for all
    await client.flushall()
    return {
        "channel": channel.value, "motp_user": round(per_user, 1),
        "sample": sample, "tx_id": tx_id, "hash_max_listpack_value": listpack_value, "record_encoding": encoding,
        "record_hash": round(record, 1), "audit_trail_bytes": round(trail, 1),
        "timer_member": round(per_timer, 1),
        "tx_claim": round(per_claim, 1), "live_counters": round(per_counter, 1),
        "memory_usage_total": round(record + per_timer + per_claim + per_counter, 1),
        "used_memory_growth": round(growth, 1),
    }


def memory_ratio(memory: dict[str, Any]) -> float | None:
    return ratio(memory["sms"]["used_memory_growth"], 1024)
