"""Start-up refuses an unsafe production (contract section 8), run as an operator runs it: the CLI
in a subprocess. With VERIFLOW_REDIS_URL set, each unsafe setting is one line naming the
variable and a non-zero exit, before anything listens or touches the store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from service import settings as settings_module
from service.startup import safety
from tests.conftest import free_port
from tests.test_processes import Process, processes, wait_ready  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SAFE = {"VERIFLOW_SECRET_KEY": "s" * 32, "VERIFLOW_API_KEYS": "acme:0123456789abcdef",
        "VERIFLOW_PROVIDER_SECRET": "a-provider-secret"}
UNUSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens there: a refusal must come first


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


UNSAFE = [
    ("no secret key", {"VERIFLOW_SECRET_KEY": ""}, "VERIFLOW_SECRET_KEY"),
    ("1-byte secret key", {"VERIFLOW_SECRET_KEY": "x"}, "VERIFLOW_SECRET_KEY"),
    ("31-byte secret key", {"VERIFLOW_SECRET_KEY": "x" * 31}, "VERIFLOW_SECRET_KEY"),
    ("no API keys", {"VERIFLOW_API_KEYS": ""}, "VERIFLOW_API_KEYS"),
    ("short API key", {"VERIFLOW_API_KEYS": "acme:0123456789abcdef,b:0123456789"}, "VERIFLOW_API_KEYS"),
    ("the development key", {"VERIFLOW_API_KEYS": "dev:dev-key-change-me"}, "VERIFLOW_API_KEYS"),
    ("no simulator secret", {"VERIFLOW_PROVIDER_SECRET": ""}, "VERIFLOW_PROVIDER_SECRET"),
    ("the published simulator secret", {"VERIFLOW_PROVIDER_SECRET": settings_module.DEV_PROVIDER_SECRET},
     "VERIFLOW_PROVIDER_SECRET"),
]


class TestRefusals:
    @pytest.mark.parametrize(("case", "change", "variable"), UNSAFE, ids=[case[0] for case in UNSAFE])
    def test_api_refuses_with_one_line_naming_the_variable(self, subprocess_env, case, change, variable):
        env = {**subprocess_env, **SAFE, "VERIFLOW_REDIS_URL": UNUSED_REDIS, **change}
        done = run(["api", "--port", str(free_port())], env)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert variable in lines[0]
        assert "listening" not in done.stderr + done.stdout

    @pytest.mark.parametrize("command", [["serve"], ["serve", "--simulator"], ["worker"]])
    def test_serve_and_worker_refuse_too(self, subprocess_env, command):
        env = {**subprocess_env, **SAFE, "VERIFLOW_REDIS_URL": UNUSED_REDIS, "VERIFLOW_SECRET_KEY": "short"}
        done = run(command, env)
        assert done.returncode != 0
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]
        assert "VERIFLOW_SECRET_KEY" in done.stderr

    def test_a_real_provider_without_its_credentials(self, subprocess_env, tmp_path):
        config = tmp_path / "portone.yaml"
        config.write_text("providers: {sms_upstream: portone}\n", encoding="utf-8")
        env = {**subprocess_env, **SAFE, "VERIFLOW_REDIS_URL": UNUSED_REDIS, "VERIFLOW_CONFIG": str(config)}
        done = run(["api"], env)
        assert done.returncode != 0
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]
        assert "VERIFLOW_PORTONE_IMP_KEY" in done.stderr

    def test_an_unreachable_store_is_one_clear_line(self, subprocess_env, tmp_path):
        config = tmp_path / "wait.yaml"
        config.write_text("store: {connect_timeout_s: 1}\n", encoding="utf-8")  # waited for 1 s, not 30
        env = {**subprocess_env, **SAFE, "VERIFLOW_REDIS_URL": UNUSED_REDIS, "VERIFLOW_CONFIG": str(config)}
        done = run(["api", "--port", str(free_port())], env)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "listening" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if "unreachable" in line]
        assert len(errors) == 1, done.stderr
        assert errors[0].startswith("veriflow: the store is unreachable")

    def test_the_checks_as_a_function(self):
        settings = settings_module.load({**SAFE, "VERIFLOW_REDIS_URL": UNUSED_REDIS})
        assert safety.refuse_unsafe(settings, simulator_mounted=True) is None
        assert safety.refuse_unsafe(settings_module.load({}), simulator_mounted=True) is None, "embedded"


class TestProduction:
    async def test_safe_production_listens_without_the_simulator_and_keeps_no_key_in_redis(
            self, processes, subprocess_env, redis_server, tmp_path):  # noqa: F811
        """With a real Redis: /sim is not mounted unless asked; the service key never reaches
        Redis; "listening on" comes once the port answers."""
        client = aioredis.Redis.from_url(redis_server)
        await client.flushall()
        port = free_port()
        env = {**subprocess_env, **SAFE, "VERIFLOW_REDIS_URL": redis_server}
        serve = Process(["serve", "--port", str(port)], env, tmp_path / "serve.log")
        processes.append(serve)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, serve, "/readyz")
        for _ in range(100):
            if "listening on" in serve.output():
                break
            await asyncio.sleep(0.05)
        assert f"listening on http://127.0.0.1:{port}" in serve.output()
        assert "dev-key-change-me" not in serve.output()
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/sim/sms?phone=01012345678") as resp:
                assert resp.status == 404, "the simulator is not mounted with a real Redis"
            async with session.post(base + "/v1/providers/simulator/events", data=b"{}") as resp:
                assert resp.status == 401
        assert [key async for key in client.scan_iter("*service-key*")] == []
        serve.stop()
        other = free_port()
        with_sim = Process(["serve", "--simulator", "--port", str(other)], env, tmp_path / "sim.log")
        processes.append(with_sim)
        await wait_ready(f"http://127.0.0.1:{other}", with_sim, "/sim/sms?phone=01012345678")
        await client.aclose()
