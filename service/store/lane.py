"""The lane: a step's two commands, the record's HGETALL and the COMMIT script's EVALSHA, pipelined
on one connection of the store client's own.

Each command is written at once, and the replies are matched to the commands in the order they
were sent, which is the order Redis answers them in. The requests of a busy API share one
connection, so one read from the socket carries many replies. A command costs a write and a
future; redis-py costs a pool lock, four awaited counters, a retry closure, a timer and a
stream-reader read around each (bench/README.md).

What redis-py does that a step needs is kept:
- a connection the server closed fails its commands with ConnectionError, and each is sent
  once more on a fresh connection (`StoreOptions.retries`; COMMIT's token makes a commit that
  did apply answer "ok" again);
- a command unanswered after the socket timeout fails with TimeoutError and closes the
  connection, with everything still waiting on it;
- a cancelled command's reply, when it comes, is read and dropped, so it is never taken for
  the next command's.
Only `redis://` URLs get a lane, with the pool's host, port, credentials and database; anything
else takes redis-py's own path (service/store/client.py).
"""

from __future__ import annotations

import asyncio
import builtins
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.backoff import AbstractBackoff
from redis.exceptions import ConnectionError, InvalidResponse, RedisError, TimeoutError  # noqa: A004 - redis' own

# A frozen store is noticed between the socket timeout and this much of it later.
WATCH_FRACTION = 0.25
# The pool's settings the lane honours or has no use for (redis-py's own bookkeeping, and its
# maintenance notifications, which only RESP3 connections receive); a pool with any other set
# keeps redis-py's path.
KNOWN_SETTINGS = frozenset({
    "host", "port", "db", "username", "password", "client_name", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "protocol", "retry", "himport_registry", "maint_notifications_pool_handler",
    "maint_notifications_config", "orig_host_address", "orig_socket_timeout", "orig_socket_connect_timeout"})


@dataclass(frozen=True, slots=True)
class LaneAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    client_name: str | None
    timeout_s: float
    connect_timeout_s: float

    @classmethod
    def of(cls, settings: dict[str, Any]) -> LaneAddress | None:
        """The lane's address from a redis-py pool's connection settings; None when they ask for
        what the lane does not do (decoded replies, a credential provider, TLS...) or set no
        socket timeout (the watchdog's)."""
        if set(settings) - KNOWN_SETTINGS or not settings.get("socket_timeout"):
            return None
        return cls(settings.get("host", "localhost"), int(settings.get("port", 6379)), int(settings.get("db", 0)),
                   settings.get("username"), settings.get("password"), settings.get("client_name"),
                   float(settings["socket_timeout"]),
                   float(settings.get("socket_connect_timeout") or settings["socket_timeout"]))

    def handshake(self) -> list[tuple[Any, ...]]:
        """The commands a new connection sends first. RESP2: a reply's shape does not depend on
        the URL's protocol."""
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        return commands


class _Replies(asyncio.Protocol):
    """One connection: the futures of the commands sent on it, in order, each with its send time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None

    def open_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Usable by a command on `loop`: open, and the loop's own (a test's next loop opens anew)."""
        return self.transport is not None and not self.transport.is_closing() and self.loop is loop

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Writes one packed command; its reply comes to the future it returns."""
        future = self.loop.create_future()
        self.waiting.append((future, self.loop.time()))
        cast("asyncio.Transport", self.transport).write(packed)  # open: the lane checked it
        return future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # a TCP connection's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future = self.waiting.popleft()[0]
                if future.done():  # its caller was cancelled: the reply is dropped, in its turn
                    continue
                if isinstance(reply, RedisError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (InvalidResponse, IndexError) as exc:  # bytes out of step with the commands
            reason = repr(exc)
            self.fail(lambda: ConnectionError(f"the store's reply could not be read: {reason}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"Connection closed by server ({exc})." if exc else "Connection closed by server."
        self.fail(lambda: ConnectionError(reason))

    def fail(self, error: Callable[[], RedisError]) -> None:
        """Closes the connection: every command still waiting on it fails with a new `error()`."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(error())


class CommandLane:
    """The lane of one store client (see the module's docstring)."""

    def __init__(self, address: LaneAddress, retries: int, backoff: AbstractBackoff) -> None:
        self.address = address
        self._retries = retries
        self._backoff = backoff
        self._connection: _Replies | None = None
        self._opening = asyncio.Lock()
        self._watch: asyncio.TimerHandle | None = None
        self.opened = 0  # connections opened so far

    async def execute(self, *args: Any) -> Any:
        packed = hiredis.pack_command(args)  # in C: the bytes redis-py packs in Python (tested)
        failures = 0
        while True:
            try:
                return await self._send(packed)
            except ConnectionError:
                failures += 1
                if failures > self._retries:
                    raise
                await asyncio.sleep(self._backoff.compute(failures))

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return hash_reply(await self.execute("HGETALL", key))

    async def _send(self, packed: bytes) -> Any:
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is None or not connection.open_on(loop):
            connection = await self._connect(loop)
        future = connection.send(packed)
        if self._watch is None:
            self._watch = loop.call_later(self.address.timeout_s * WATCH_FRACTION, self._check)
        return await future

    def _check(self) -> None:
        """The watchdog: the oldest command still unanswered after the socket timeout closes its
        connection. One timer a lane, not one a command."""
        self._watch = None
        connection = self._connection
        if connection is None or not connection.waiting:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - connection.waiting[0][1] >= self.address.timeout_s:
            where = f"{self.address.host}:{self.address.port}"
            connection.fail(lambda: TimeoutError(f"Timeout reading from {where}"))
            return
        self._watch = loop.call_later(self.address.timeout_s * WATCH_FRACTION, self._check)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Replies:
        async with self._opening:  # concurrent commands wait for one new connection
            connection = self._connection
            if connection is not None and connection.open_on(loop):
                return connection
            if connection is not None:
                connection.fail(lambda: ConnectionError("Connection closed by server."))
            if self._watch is not None:  # a closed loop's watchdog would never run again
                self._watch.cancel()
                self._watch = None
            self._connection = connection = await self._open(loop)
            self.opened += 1
            return connection

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Replies:
        address = self.address
        where = f"{address.host}:{address.port}"
        try:
            async with asyncio.timeout(address.connect_timeout_s):
                transport, connection = await loop.create_connection(lambda: _Replies(loop), address.host, address.port)
        except builtins.TimeoutError as exc:  # asyncio.timeout's, not redis'
            raise TimeoutError(f"Timeout connecting to {where}") from exc
        except OSError as exc:
            raise ConnectionError(f"Error connecting to {where}. {exc}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            async with asyncio.timeout(address.connect_timeout_s):
                await asyncio.gather(*(connection.send(hiredis.pack_command(command)) for command in address.handshake()))
        except BaseException as exc:
            connection.fail(lambda: ConnectionError(f"Error connecting to {where}"))
            if isinstance(exc, builtins.TimeoutError):
                raise TimeoutError(f"Timeout connecting to {where}") from exc
            raise
        return connection

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.fail(lambda: ConnectionError("the store client was closed"))


def hash_reply(reply: Any) -> dict[Any, Any]:
    """A hash as Redis answers it: a map (RESP3, redis-py's default) or a flat list of fields
    and values (RESP2, the lane's, and a hash a script returns)."""
    if isinstance(reply, dict):
        return reply
    pairs = iter(reply)
    return dict(zip(pairs, pairs, strict=True))
