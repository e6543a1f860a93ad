"""The client side of the carrier calls veriflow's API makes, alone: `python -m bench.calls SPEC`.

The service's own `SimulatorClient` on its own pooled, keep-alive provider session (exactly what
an API process uses) asks the running simulator `calls` subscriber checks (a start's) and `calls`
add-on checks (a right code's confirm) at the saturating concurrency. The CPU this process spends
per call is what one provider call costs an API process, so a step's CPU with its provider calls,
less this, is the step's CPU without them. Prints a JSON result.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench.seed import subject
from service.providers.config import SIMULATOR
from service.providers.sessions import ProviderSessions
from service.providers.simulator import SimulatorClient

Call = Callable[[SimulatorClient, int], Awaitable[object]]
CALLS: dict[str, Call] = {
    "subscriber_check": lambda client, n: client.check_subscriber(f"bench-{n}", "sms", subject(n)),
    "addon_check": lambda client, n: client.check_addons(f"bench-{n}", subject(n).phone),
}


async def cpu_ms_per_call(client: SimulatorClient, call: Call, count: int, concurrency: int) -> float:
    numbers = iter(range(count))

    async def caller() -> None:
        for n in numbers:
            await call(client, n)

    await asyncio.gather(*(call(client, n) for n in range(concurrency)))  # open the pool's connections
    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return round((time.process_time() - started) * 1000 / count, 4)


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    sessions = ProviderSessions()
    client = SimulatorClient(spec["simulator_url"], sessions.for_provider(SIMULATOR), 10.0, spec["secret"])
    try:
        out: dict[str, Any] = {"calls": spec["calls"], "concurrency": spec["concurrency"]}
        for name, call in CALLS.items():
            out[f"{name}_cpu_ms"] = await cpu_ms_per_call(client, call, spec["calls"], spec["concurrency"])
        return out
    finally:
        await sessions.close()


def main(argv: list[str]) -> None:
    spec = orjson.loads(Path(argv[0]).read_bytes())
    sys.stdout.write(orjson.dumps(asyncio.run(measure(spec))).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
