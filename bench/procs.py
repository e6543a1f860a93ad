"""Starting and stopping the processes of a run: redis-server, veriflow's parts, the baseline.

Everything listens on 127.0.0.1 only, on ports picked free at start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
API_KEY = "bench-key-0001-0123"  # production rules: 16+ characters
CLIENT = "bench"
SECRET_KEY = "bench-secret-key-0123456789abcdef"  # noqa: S105 - a throw-away store
PROVIDER_SECRET = "bench-provider-secret"  # noqa: S105 - signs the simulator's traffic
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{process.args!r} exited with {process.returncode}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    msg = f"nothing listens on {HOST}:{port} after {timeout_s}s"
    raise RuntimeError(msg)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants so far (`api --workers N`
    forks its API processes), from /proc (no psutil needed)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return own + sum(cpu_seconds(child) for child in children(pid))


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used (every CPU, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def service_env(redis_url: str, simulator_url: str, config: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERIFLOW_")}
    env.update({
        "VERIFLOW_REDIS_URL": redis_url,
        "VERIFLOW_API_KEYS": f"{CLIENT}:{API_KEY}",
        "VERIFLOW_SECRET_KEY": SECRET_KEY,
        "VERIFLOW_PROVIDER_SECRET": PROVIDER_SECRET,
        "VERIFLOW_SIMULATOR_URL": simulator_url,
        "PYTHONPATH": str(ROOT),
    })
    if config is not None:
        env["VERIFLOW_CONFIG"] = str(config)
    return env


def service_args(part: str, port: int | None = None, *, reuse_port: bool = False) -> list[str]:
    """The command line of one veriflow part (`api`, `worker`, `simulator`)."""
    args = [sys.executable, "-m", "service", part]
    if port is not None:
        args += ["--host", HOST, "--port", str(port)]
    if reuse_port:
        args.append("--reuse-port")
    return args


@dataclass
class Processes:
    """The processes of one run; `stop()` ends exactly these, by their ids."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path = field(default_factory=lambda: Path(os.devnull))

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None,
              port: int | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab") if self.logs.is_dir() else subprocess.DEVNULL
        process = subprocess.Popen(list(args), cwd=ROOT, env=dict(env or os.environ),
                                   stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        if port is not None:
            wait_for_port(port, process)
        return process

    def stop_one(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process in self.started:
            self.started.remove(process)

    def stop(self) -> None:
        for process in reversed(list(self.started)):
            self.stop_one(process)


def redis_args(port: int, workdir: Path) -> list[str]:
    """A throw-away redis-server: no persistence (the benchmark measures the service, not the
    disk), noeviction and hash-max-listpack-value 256 as docker-compose.yml runs it (a record's
    sealed subject is longer than the default 64 bytes, which would double its memory)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    return [binary, "--port", str(port), "--bind", HOST, "--dir", str(workdir), "--save", "",
            "--appendonly", "no", "--maxmemory-policy", "noeviction", "--protected-mode", "yes",
            "--hash-max-listpack-value", "256"]
