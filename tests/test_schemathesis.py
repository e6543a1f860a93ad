"""Schemathesis, every check, against `veriflow serve` (embedded store) on a loopback port: the
OpenAPI document is truthful enough that a schema-driven fuzzer, stateful links included, finds no
failure and no 5xx. The budget is bounded (`--max-examples`, `--request-timeout`).

Prints what it covered: requests and operations, and how many generated starts were accepted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

HERE = Path(__file__).resolve().parent / "schemathesis"
DEV_KEY = "dev-key-change-me"  # the development client of the embedded store
MAX_EXAMPLES = 100
BUDGET_S = 170


def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "veriflow serve exited"
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail("veriflow serve did not become ready")


def request_counts(base: str) -> dict[tuple[str, str, str], int]:
    """(method, route, status) -> requests answered, from the service's own metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    return {(s.labels["method"], s.labels["route"], s.labels["status"]): int(s.value)
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "veriflow_http_request_seconds_count"}


@pytest.mark.slow
def test_schemathesis_finds_no_failure(subprocess_env: dict[str, str], repo_root: Path, tmp_path: Path):
    cli = shutil.which("schemathesis") or shutil.which("st")
    assert cli, "schemathesis is in the test extras"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**subprocess_env, "VERIFLOW_API_KEYS": "", "PYTHONPATH": str(repo_root)}
    env.pop("VERIFLOW_API_KEYS")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(base, server)
        report = tmp_path / "report.json"
        run = subprocess.run(
            [cli, "--config-file", str(HERE / "schemathesis.toml"), "run", base + "/openapi.json",
             "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--request-timeout", "10",
             "--workers", "1", "--seed", "1", "-H", f"Authorization: Bearer {DEV_KEY}",
             "--report", "json", "--report-json-path", str(report)],
            cwd=tmp_path, env={**env, "SCHEMATHESIS_HOOKS": "hooks", "PYTHONPATH": f"{HERE}{os.pathsep}{repo_root}"},
            capture_output=True, text=True, timeout=BUDGET_S, check=False)
        counts = request_counts(base)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    summary = json.loads(report.read_text(encoding="utf-8"))
    start_statuses = {status: n for (method, route, status), n in sorted(counts.items())
                      if (method, route) == ("POST", "/v1/verifications")}
    links = [line.strip() for line in run.stdout.splitlines() if "link" in line.lower()]
    requests = sum(counts.values())
    starts = sum(n for (method, route, status), n in counts.items()
                 if (method, route, status) == ("POST", "/v1/verifications", "201"))
    server_errors = {key: n for key, n in counts.items() if key[2].startswith("5")}
    print(f"schemathesis: {requests} requests, {summary['operations']['tested']} of "  # noqa: T201
          f"{summary['operations']['total']} operations, {summary['test_cases']['generated']} test cases, "
          f"{starts} starts accepted (201); starts by status {start_statuses}; {'; '.join(links)}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert summary["failures"] == [], summary["failures"]
    assert summary["operations"]["tested"] == summary["operations"]["total"]
    assert not server_errors, server_errors
    assert starts > 0
    assert summary["phases"]["stateful"]["status"] == "success", summary["phases"]
