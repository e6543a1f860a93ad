"""The service as separate processes: the embedded default, a crash, the compose file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from service.cli import parse
from tests.conftest import free_port, start_body

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY = "crash-test-key-0001"


class Process:
    """A `python -m service …` child process whose stderr is kept for assertions."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as sink:
            self.popen = subprocess.Popen([sys.executable, "-m", "service", *args], cwd=ROOT, env=env,
                                          stdout=sink, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(10)


async def wait_ready(base: str, process: Process, path: str = "/healthz") -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.popen.poll() is not None:
                pytest.fail(f"process exited:\n{process.output()}")
            try:
                async with session.get(base + path) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail(f"{base} never became ready:\n{process.output()}")


async def call(session: aiohttp.ClientSession, method: str, url: str, key: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


class TestEmbeddedDefault:
    async def test_serve_without_redis_works_and_says_so(self, processes, subprocess_env, tmp_path):
        """No VERIFLOW_REDIS_URL: the embedded store, announced with its durability, runs a flow."""
        port = free_port()
        serve = Process(["serve", "--port", str(port)], subprocess_env, tmp_path / "serve.log")
        processes.append(serve)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, serve)
        output = serve.output()
        assert "embedded in-memory store" in output
        assert "does NOT survive a restart" in output
        assert "dev-key-change-me" in output, "the development client is printed"
        async with aiohttp.ClientSession() as session:
            status, started = await call(session, "POST", base + "/v1/verifications", "dev-key-change-me",
                                         start_body("01013572468"))
            assert status == 201
            for _ in range(100):
                async with session.get(base + "/sim/sms?phone=01013572468") as resp:
                    messages = (await resp.json())["messages"]
                if messages:
                    break
                await asyncio.sleep(0.05)
            status, verified = await call(session, "POST", f"{base}/v1/verifications/{started['id']}/confirm",
                                          "dev-key-change-me", {"code": messages[0]["code"]})
            assert (status, verified["status"]) == (200, "verified")
        lines = [line for line in serve.output().splitlines() if line and not line.startswith("veriflow: ")]
        assert lines, "the service logs"
        assert all(line.startswith("{") for line in lines), "every log line is JSON"


class TestCrash:
    async def test_sigkill_loses_no_verification_and_timers_fire_after_restart(
            self, processes, subprocess_env, redis_server, tmp_path):
        """Kill -9 right after starting verifications: after a restart every SMS is delivered,
        codes still confirm, and the others expire by their timers (no read needed)."""
        client = aioredis.Redis.from_url(redis_server)
        await client.flushall()
        config = tmp_path / "veriflow.yaml"
        config.write_text(
            "channels: {sms: {session_ttl_s: 6}}\ntimers: {poll_interval_ms: 50}\n"
            "outbox: {retry_idle_ms: 300, block_ms: 100}\n", encoding="utf-8")
        sim_port, port = free_port(), free_port()
        env = {**subprocess_env, "VERIFLOW_REDIS_URL": redis_server, "VERIFLOW_CONFIG": str(config),
               "VERIFLOW_API_KEYS": f"acme:{KEY}", "VERIFLOW_SECRET_KEY": "crash-secret-" + "0" * 20,
               "VERIFLOW_PROVIDER_SECRET": "crash-provider-secret",
               "VERIFLOW_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}/sim"}
        simulator = Process(["simulator", "--port", str(sim_port)], env, tmp_path / "sim.log")
        processes.append(simulator)
        base = f"http://127.0.0.1:{port}"
        sim = f"http://127.0.0.1:{sim_port}"
        await wait_ready(sim, simulator, "/sim/sms?phone=01000000000")
        serve = Process(["serve", "--no-simulator", "--port", str(port)], env, tmp_path / "serve1.log")
        processes.append(serve)
        await wait_ready(base, serve)
        phones = [f"0109000{n:04d}" for n in range(10)]
        async with aiohttp.ClientSession() as session:
            ids = []
            for phone in phones:
                status, body = await call(session, "POST", base + "/v1/verifications", KEY, start_body(phone))
                assert status == 201
                ids.append(body["id"])
            serve.stop(signal.SIGKILL)  # no time to deliver, fire or clean anything up
            restarted = Process(["serve", "--no-simulator", "--port", str(port)], env, tmp_path / "serve2.log")
            processes.append(restarted)
            await wait_ready(base, restarted)
            codes = {}
            deadline = time.monotonic() + 20
            while len(codes) < len(phones) and time.monotonic() < deadline:
                for phone in phones:
                    async with session.get(f"{sim}/sim/sms?phone={phone}") as resp:
                        messages = (await resp.json())["messages"]
                    if messages:
                        assert len(messages) == 1, "each code is delivered once"
                        codes[phone] = messages[0]["code"]
                await asyncio.sleep(0.1)
            assert len(codes) == len(phones), "every SMS committed before the crash is delivered"
            for vid, phone in list(zip(ids, phones, strict=True))[:5]:
                status, body = await call(session, "POST", f"{base}/v1/verifications/{vid}/confirm", KEY,
                                          {"code": codes[phone]})
                assert (status, body["status"]) == (200, "verified")
            expected = {vid: (b"verified" if n < 5 else b"expired") for n, vid in enumerate(ids)}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                seen = {vid: await client.hget(f"vf:{{{int(vid[:4], 16)}}}:v:{vid}", "status") for vid in ids}
                if seen == expected:
                    break
                await asyncio.sleep(0.2)
            assert seen == expected, "the timers expired the unconfirmed ones without any read"
        timers = sum([await client.zcard(f"vf:{{{shard}}}:timers") for shard in range(16)])
        assert timers == 5, "only the verified ones' result timers remain"
        await client.aclose()


class TestCompose:
    def test_services_run_commands_that_exist(self):
        """Each veriflow service runs a real subcommand; Redis runs with AOF and noeviction."""
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
        services = compose["services"]
        assert {"redis", "api", "worker", "simulator"} <= set(services)
        redis_command = services["redis"]["command"]
        assert redis_command[0] == "redis-server"
        flags = dict(zip(redis_command[1::2], redis_command[2::2], strict=True))
        assert flags["--appendonly"] == "yes"
        assert flags["--maxmemory-policy"] == "noeviction"
        for name in ("api", "worker", "simulator"):
            command = services[name]["command"]
            assert command[0] == "veriflow"
            parse(command[1:])  # argparse exits on an unknown subcommand or flag
            assert services[name]["build"] == "."
            assert services[name]["environment"]["VERIFLOW_REDIS_URL"].startswith("redis://redis:")
        assert (ROOT / "Dockerfile").is_file()
        scripts = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        assert 'veriflow = "service.cli:main"' in scripts
        assert os.access(ROOT / "scripts" / "test", os.X_OK)
