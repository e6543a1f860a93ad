"""A real Redis Cluster on loopback for tests: 3 primaries with a replica each, in a temp dir.

    cluster = Cluster().start()       # 6 redis-server processes, formed with redis-cli
    cluster.primary_for_slot(slot)    # the port of the primary serving a hash slot
    cluster.kill(port)                # SIGKILL one node
    cluster.wait_failover(port)       # until its replica is promoted; the new primary's port
    cluster.stop()                    # kill everything, remove the temp dir

Every wait is bounded: a cluster that does not form or does not fail over raises ClusterError
with the tails of the nodes' logs, it never hangs. The nodes die with the process that
started them (PR_SET_PDEATHSIG on Linux), so an interrupted run leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import redis

HOST = "127.0.0.1"
SLOTS = 16384
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000
# Ports below the kernel's ephemeral range (32768-60999 by default), their bus ports too, so no
# outgoing connection takes one between the check that it is free and the node's bind.
PORT_RANGE = (12_000, 22_700)
PR_SET_PDEATHSIG = 1

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster did not reach the state a test waits for, within the time allowed."""


@dataclass
class Node:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"[{self.port}] (no log)"
        return "\n".join(f"[{self.port}] {line}" for line in text)


@dataclass(frozen=True, slots=True)
class SlotRange:
    start: int
    end: int
    primary: int  # port
    replicas: tuple[int, ...]

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and self.start <= slot <= self.end


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_until(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something other than None; ClusterError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Cluster:
    primaries: int = 3
    replicas_per_primary: int = 1
    node_timeout_ms: int = 1000  # how long a silent node takes to be suspected (failover speed)
    start_timeout_s: float = 30.0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-cluster-")))
    nodes: list[Node] = field(default_factory=list)
    _lost: dict[int, list[SlotRange]] = field(default_factory=dict)

    # ---- lifecycle ----

    def start(self) -> Self:
        """Start the nodes, form the cluster, wait until every node says cluster_state:ok and
        every replica is in sync. On any failure everything started is stopped again."""
        try:
            count = self.primaries * (1 + self.replicas_per_primary)
            for _ in range(count):
                self.nodes.append(self._start_node())
            self._create()
            self.wait_ok(self.start_timeout_s, replicas_in_sync=True)
        except BaseException as exc:
            logs = self.log_tails()
            self.stop()
            if isinstance(exc, ClusterError):
                raise ClusterError(f"{exc}\n{logs}") from exc
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every node still running and remove the temp dir. Safe to call twice."""
        for node in self.nodes:
            if node.alive:
                node.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _start_node(self, attempts: int = 5) -> Node:
        """One redis-server on a free port (another one if a race took it before the bind)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterError("redis-server is not installed (Debian: apt-get install redis-server)")
        taken = {node.port for node in self.nodes}
        for _ in range(attempts):
            port = random.randrange(*PORT_RANGE)
            if port in taken or not (_port_is_free(port) and _port_is_free(port + BUS_OFFSET)):
                continue
            workdir = self.root / str(port)
            workdir.mkdir()
            with (workdir / "redis.log").open("wb") as log:
                process = subprocess.Popen(
                    [binary, "--port", str(port), "--bind", HOST, "--dir", str(workdir),
                     "--cluster-enabled", "yes", "--cluster-config-file", str(self.root / f"nodes-{port}.conf"),
                     "--cluster-node-timeout", str(self.node_timeout_ms),
                     "--appendonly", "yes", "--save", "", "--daemonize", "no",
                     "--repl-diskless-sync-delay", "0"],  # a replica syncs at once, not after 5 s
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - started from the main thread
                )
            node = Node(port, workdir, process)
            if self._answers(node):
                return node
            process.kill()
            process.wait(10)
        raise ClusterError(f"no redis-server started after {attempts} ports were tried\n{self.log_tails()}")

    def _answers(self, node: Node, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and node.alive:
            with contextlib.suppress(redis.RedisError, OSError), self.client(node.port) as client:
                if client.ping():
                    return True
            time.sleep(0.05)
        return False

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ClusterError("redis-cli is not installed (Debian: apt-get install redis-server)")
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        try:
            done = subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas_per_primary),
                 "--cluster-yes"],
                capture_output=True, text=True, timeout=self.start_timeout_s, check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"redis-cli --cluster create did not finish in {self.start_timeout_s:.0f}s") from exc
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise ClusterError(f"redis-cli --cluster create failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    # ---- what the cluster looks like ----

    def client(self, port: int, **options: Any) -> redis.Redis:
        """A plain (non-cluster) client of one node, with short timeouts."""
        options.setdefault("socket_timeout", 2)
        options.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host=HOST, port=port, **options)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def alive_ports(self) -> list[int]:
        return [node.port for node in self.nodes if node.alive]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.alive_ports]

    @property
    def url(self) -> str:
        """The service's VERIFLOW_REDIS_URL for this cluster (one live node; it finds the rest)."""
        return f"redis+cluster://{HOST}:{self.alive_ports[0]}"

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def slot_ranges(self, port: int | None = None) -> list[SlotRange]:
        """Who serves which slots, from CLUSTER NODES as one node (by default the first live one
        that answers) sees it. Replicas flagged as failed are left out."""
        error: Exception | None = None
        for asked in [port] if port is not None else self.alive_ports:
            try:
                with self.client(asked) as client:
                    reply = client.execute_command("CLUSTER", "NODES")  # raw text, not redis-py's parse
            except (redis.RedisError, OSError) as exc:
                error = exc
                if port is not None:
                    raise
                continue
            return _slot_ranges(_text(reply))
        raise ClusterError(f"no live node answered CLUSTER NODES ({error!r})")

    def primary_for_slot(self, slot: int) -> int:
        """The port of the primary serving `slot`, as a live node sees it."""
        for slot_range in self.slot_ranges():
            if slot in slot_range:
                return slot_range.primary
        raise ClusterError(f"slot {slot} is not served")

    def replicas_of(self, primary: int) -> list[int]:
        return sorted({port for r in self.slot_ranges() if r.primary == primary for port in r.replicas})

    def primary_ports(self) -> list[int]:
        return sorted({r.primary for r in self.slot_ranges()})

    def info(self, port: int, section: str) -> dict[str, Any]:
        with self.client(port) as client:
            return dict(client.info(section))

    def cluster_info(self, port: int) -> dict[str, str]:
        with self.client(port) as client:
            reply = client.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
        return {_text(key): _text(value) for key, value in dict(reply).items()}

    def log_tails(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes)

    # ---- waiting ----

    def wait_ok(self, timeout: float = 30.0, *, replicas_in_sync: bool = False) -> None:
        """Until every live node says cluster_state:ok with all slots assigned and they agree on
        who serves which slot; with `replicas_in_sync`, also until every primary has all its
        replicas online."""
        expected_replicas = self.replicas_per_primary if replicas_in_sync else 0

        def probe() -> bool | None:
            try:
                views = []
                for port in self.alive_ports:
                    info = self.cluster_info(port)
                    if info.get("cluster_state") != "ok" or info.get("cluster_slots_assigned") != str(SLOTS):
                        return None
                    views.append([(r.start, r.end, r.primary, r.replicas) for r in self.slot_ranges(port)])
                if any(view != views[0] for view in views):
                    return None
                primaries = {primary for _, _, primary, _ in views[0]}
                for primary in primaries:
                    replication = self.info(primary, "replication")
                    if replication.get("role") != "master":
                        return None
                    online = sum(1 for key, value in replication.items()
                                 if key.startswith("slave") and isinstance(value, dict)
                                 and value.get("state") == "online")
                    if online < expected_replicas:
                        return None
            except (redis.RedisError, OSError):
                return None
            return True

        _wait_until("cluster_state:ok on every node", probe, timeout)

    # ---- failures ----

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no last AOF write). The slots it served as primary are
        remembered for wait_failover."""
        if port not in self.alive_ports:
            raise ClusterError(f"node {port} is not running")
        with contextlib.suppress(redis.RedisError, OSError, ClusterError):
            self._lost[port] = [r for r in self.slot_ranges() if r.primary == port]
        node = self.node(port)
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)

    def wait_failover(self, old_primary: int, timeout: float = 30.0) -> int:
        """Until every slot the killed primary served is served by a promoted replica, every live
        node says cluster_state:ok and they all agree; returns the new primary's port."""
        lost = self._lost.get(old_primary)
        if not lost:
            raise ClusterError(f"{old_primary} was not killed as a primary")

        def probe() -> int | None:
            try:
                views = {port: self.slot_ranges(port) for port in self.alive_ports}
                owners = {r.primary for view in views.values() for r in view
                          for gone in lost if r.start <= gone.start <= r.end}
                if len(owners) != 1:
                    return None
                (owner,) = owners
                if owner == old_primary or owner not in self.alive_ports:
                    return None
                if any(self.cluster_info(port).get("cluster_state") != "ok" for port in self.alive_ports):
                    return None
                if self.info(owner, "replication").get("role") != "master":
                    return None
            except (redis.RedisError, OSError):
                return None
            return owner

        try:
            return _wait_until(f"a replica of {old_primary} to be promoted", probe, timeout)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.log_tails()}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _slot_ranges(nodes_text: str) -> list[SlotRange]:
    """CLUSTER NODES lines: id host:port@bus[,name] flags primary-id ping pong epoch link slot*."""
    port_of: dict[str, int] = {}
    replicas: dict[str, list[int]] = {}
    served: list[tuple[int, int, str]] = []
    for line in nodes_text.strip().splitlines():
        node_id, address, flags, primary_id, _, _, _, _, *slots = line.split()
        port_of[node_id] = int(address.split("@")[0].rpartition(":")[2])
        if "slave" in flags.split(","):
            if "fail" not in flags.split(","):
                replicas.setdefault(primary_id, []).append(port_of[node_id])
            continue
        for slot in slots:
            if slot.startswith("["):  # a slot being migrated or imported
                continue
            first, _, last = slot.partition("-")
            served.append((int(first), int(last or first), node_id))
    return sorted((SlotRange(first, last, port_of[node_id], tuple(sorted(replicas.get(node_id, []))))
                   for first, last, node_id in served), key=lambda r: r.start)
