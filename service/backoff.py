"""A worker loop's view of its failures: exponential back-off, capped, and two log lines per outage.

    outage = Outage("timers")
    try:
        await work()
    except Exception as exc:
        await sleep(outage.failed(exc))   # logs once when the store goes away
    else:
        outage.recovered()                # logs once when it is back, with the outage's duration

A store fault (`service.store.health`) is logged as one line when it starts, never per poll. Any
other error is logged with its traceback, at most once per back-off interval.
"""

from __future__ import annotations

import time

import structlog

from service.store.health import describe, is_store_fault

log = structlog.get_logger("veriflow.backoff")

BASE_S = 0.1
CAP_S = 2.0  # the store is tried again at least this often: back within 2 s of its return


class Outage:
    def __init__(self, loop: str, *, base_s: float = BASE_S, cap_s: float = CAP_S) -> None:
        self.loop = loop
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self.down_since: float | None = None  # monotonic time of the first store fault
        self.outages = 0

    @property
    def store_down(self) -> bool:
        return self.down_since is not None

    def delay_s(self) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** max(self.failures - 1, 0)))

    def failed(self, exc: BaseException) -> float:
        """Note a failed iteration; returns how long to wait before the next one."""
        self.failures += 1
        if is_store_fault(exc):
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.outages += 1
                log.warning("store.unavailable", loop=self.loop, error=describe(exc))
        else:
            log.error("loop.error", loop=self.loop, error=describe(exc), retry_in_s=self.delay_s(),
                      exc_info=exc)
        return self.delay_s()

    def recovered(self) -> None:
        """Note a successful iteration: the back-off resets, and a store outage ends."""
        self.failures = 0
        if self.down_since is not None:
            outage_s = time.monotonic() - self.down_since
            self.down_since = None
            log.warning("store.available", loop=self.loop, outage_s=round(outage_s, 3))
