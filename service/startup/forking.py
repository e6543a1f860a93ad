"""Several API processes on one port: forked before any event loop starts, each binding the same
address with SO_REUSEPORT, so the kernel spreads new connections over them.

Why not a process manager (gunicorn's aiohttp worker): each process is the ordinary
`web.run_app`, with the service's own start-up and its graceful drain (aiohttp stops accepting,
lets in-flight requests finish within `shutdown_timeout`, then runs the cleanup that stops the
workers and closes the store); the parent only forwards SIGTERM/SIGINT and waits, so there is
nothing more to configure and no second HTTP stack to keep in step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT)


def run_forked(count: int, serve: Callable[[], None]) -> int:
    """Run `serve` in `count` child processes; forward SIGTERM/SIGINT to them; return the first
    non-zero exit status among them (0 when every child ended cleanly)."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's cleanup
            os._exit(_child(serve))
        children.append(pid)

    def forward(signum: int, _: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code and not worst:
            worst = code if code > 0 else 128 - code
            forward(signal.SIGTERM, None)  # one failed: take the others down too
    return worst


def _child(serve: Callable[[], None]) -> int:
    code = 0
    try:
        serve()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, and the exit status says it
        sys.excepthook(*sys.exc_info())
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code
