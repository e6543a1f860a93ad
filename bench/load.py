"""The load generator, run in its own process: `python -m bench.load SPEC.json` prints a JSON result.

A spec names the targets (base URLs; concurrent workers are spread over them round-robin),
the scenario, the concurrency, and a bound on both the number of requests and the time.
Scenarios:
  confirm  one POST confirm per item (items: verification id and the code to send)
  start    one POST /v1/verifications per item (a phone number)
  flow     start -> read the code from the inbox -> confirm -> redeem, per item (a phone number)
Each request's latency is kept; a flow's latency is its four steps end to end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.stats import summary

START_BODY = {"channel": "sms", "subject": {
    "name": "홍길동", "birth": "19900101", "gender_digit": "1", "phone": "", "carrier": "SKT"}}
INBOX_POLL_S = 0.002
INBOX_TIMEOUT_S = 10


@dataclass
class Run:
    spec: dict[str, Any]
    session: aiohttp.ClientSession
    latencies: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def veriflow(self) -> bool:
        return self.spec["kind"] == "veriflow"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.spec['api_key']}", "Content-Type": "application/json"}

    async def post(self, url: str, body: Any, expect: int) -> tuple[Any, float]:
        started = time.perf_counter()
        async with self.session.post(url, data=orjson.dumps(body), headers=self.headers) as resp:
            payload = await resp.read()
            elapsed = time.perf_counter() - started
            if resp.status != expect:
                msg = f"POST {url.rsplit('/', 2)[-2:]} answered {resp.status}, expected {expect}: {payload[:200]!r}"
                raise AssertionError(msg)
        return orjson.loads(payload) if payload else None, elapsed

    def step(self, name: str, seconds: float) -> None:
        self.steps.setdefault(name, []).append(seconds)


async def confirm_one(run: Run, base: str, item: dict[str, Any]) -> None:
    path = f"/v1/verifications/{item['id']}/confirm" if run.veriflow else f"/confirm/{item['id']}/{item['outcome']}"
    expect = 200 if item["outcome"] == "right" else 422
    _, elapsed = await run.post(base + path, {"code": item["code"]}, expect)
    run.latencies.append(elapsed)


async def start_one(run: Run, base: str, item: dict[str, Any]) -> None:
    _, elapsed = await start(run, base, item["phone"])
    run.latencies.append(elapsed)


async def start(run: Run, base: str, phone: str) -> tuple[Any, float]:
    body = {**START_BODY, "subject": {**START_BODY["subject"], "phone": phone}}
    return await run.post(base + ("/v1/verifications" if run.veriflow else "/start"), body, 201)


async def flow_one(run: Run, base: str, item: dict[str, Any]) -> None:
    started = time.perf_counter()
    view, elapsed = await start(run, base, item["phone"])
    run.step("start", elapsed)
    code, elapsed = await read_code(run, base, item["phone"], view["id"])
    run.step("inbox", elapsed)
    path = f"/v1/verifications/{view['id']}/confirm" if run.veriflow else f"/confirm/{view['id']}/right"
    view, elapsed = await run.post(base + path, {"code": code}, 200)
    run.step("confirm", elapsed)
    _, elapsed = await run.post(base + ("/v1/results" if run.veriflow else "/redeem"),
                                {"key_token": view["key_token"]}, 200)
    run.step("redeem", elapsed)
    run.latencies.append(time.perf_counter() - started)


async def read_code(run: Run, base: str, phone: str, verification_id: str) -> tuple[str, float]:
    """Poll the inbox until the SMS is there: veriflow's simulator, once the dispatcher delivered
    it; the baseline answers from its own memory."""
    url = f"{run.spec['inbox_url']}?phone={phone}" if run.veriflow else f"{base}/inbox?id={verification_id}"
    started = time.perf_counter()
    while time.perf_counter() - started < INBOX_TIMEOUT_S:
        async with run.session.get(url) as resp:
            messages = orjson.loads(await resp.read())["messages"]
        if messages:
            return str(messages[-1]["code"]), time.perf_counter() - started
        await asyncio.sleep(INBOX_POLL_S)
    msg = f"no SMS for {phone} within {INBOX_TIMEOUT_S}s"
    raise AssertionError(msg)


SCENARIOS: dict[str, Callable[[Run, str, dict[str, Any]], Awaitable[None]]] = {
    "confirm": confirm_one,
    "start": start_one,
    "flow": flow_one,
}


async def worker(run: Run, base: str, items: list[dict[str, Any]], deadline: float) -> None:
    action = SCENARIOS[run.spec["scenario"]]
    while items and time.perf_counter() < deadline:
        item = items.pop()
        try:
            await action(run, base, item)
        except (AssertionError, aiohttp.ClientError, TimeoutError, KeyError) as exc:
            run.errors.append(repr(exc))


async def warm(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as resp:
        await resp.read()


async def execute(spec: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(spec["concurrency"])
    items = list(reversed(spec["items"][: int(spec["max_requests"])]))
    connector = aiohttp.TCPConnector(limit=concurrency * 2 + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        run = Run(spec, session)
        targets = spec["targets"]
        # Open the connections before the clock starts.
        await asyncio.gather(*(warm(session, t + spec.get("warm_path", "/healthz")) for t in targets))
        started = time.perf_counter()
        deadline = started + float(spec["max_seconds"])
        await asyncio.gather(*(worker(run, targets[i % len(targets)], items, deadline)
                               for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    result = summary(run.latencies, elapsed, errors=len(run.errors))
    result["concurrency"] = concurrency
    if run.steps:
        result["steps"] = {name: summary(values, elapsed) for name, values in run.steps.items()}
    result["first_errors"] = run.errors[:3]
    return result


def main(argv: list[str]) -> None:
    spec = orjson.loads(Path(argv[0]).read_bytes())
    loop_factory = asyncio.new_event_loop
    if spec.get("uvloop"):
        try:  # a faster client when it is installed: the load generator should not be the limit
            import uvloop  # noqa: PLC0415

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(execute(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
