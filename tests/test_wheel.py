"""The service as a wheel installs it: built from the tree, installed into a fresh virtual
environment, started from a directory outside the repository. It must find its configuration
(`config/*.yaml`) inside the installed package, not next to a checkout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from service.catalog import Catalog
from tests.conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# What a build must not see: stale build/ output would land in the wheel, the rest is dead weight.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".venv", "venv",
    "results",
)
STARTUP_S = 30


def run(args: list[str], **kwargs: Any) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a loopback http URL
        return resp.status, json.loads(resp.read())


def poll(url: str, process: subprocess.Popen[bytes], log: Path, deadline: float) -> tuple[int, Any]:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"veriflow exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    pytest.fail(f"{url} did not answer within {STARTUP_S} s:\n{log.read_text(errors='replace')}")


def test_installed_wheel_serves_with_its_packaged_config(tmp_path: Path) -> None:
    if importlib.util.find_spec("venv") is None:
        pytest.skip("the venv module is not available")
    source, wheels, venv, elsewhere = (tmp_path / name for name in ("src", "whl", "venv", "run"))
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(wheels)], cwd=source)
    (wheel,) = wheels.glob("veriflow-*.whl")
    # A venv without its own pip: this pip installs into it (--python), which saves seeding one.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile", str(wheel)])
    (site,) = venv.glob("lib/python*/site-packages")
    assert (site / "service" / "_config" / "defaults.yaml").is_file()
    assert (site / "service" / "_config" / "catalog.yaml").is_file()
    assert not (site / "config").exists(), "no top-level `config` package in site-packages"
    console = site / "service" / "console" / "static"
    for name in ("index.html", "app.js", "style.css", "vendor/mermaid.min.js", "vendor/mermaid.LICENSE"):
        assert (console / name).is_file(), f"the console's {name} is in the wheel"

    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERIFLOW_") and k != "PYTHONPATH"}
    port = free_port()
    log = tmp_path / "veriflow.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(venv / "bin" / "veriflow"), "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=elsewhere, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_S
        base = f"http://127.0.0.1:{port}"
        health = poll(f"{base}/healthz", process, log, deadline)
        ready = poll(f"{base}/readyz", process, log, deadline)
        status, catalog = poll(f"{base}/v1/catalog", process, log, deadline)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert health == (200, {"status": "ok"})
    assert ready == (200, {"status": "ready"})
    assert status == 200
    assert [c["code"] for c in catalog["codes"]] == [e.code for e in Catalog.load().entries]
