"""Errors that say what they are: no such route (3007), a method the route does not take (3008,
with Allow), malformed or oversize HTTP as the JSON envelope, aiohttp's own log lines as JSON,
unsigned webhooks counted rather than logged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator

import pytest
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from service.api import idempotency as held_keys
from service.api.app import build_app
from service.api.protocol import EnvelopedRunner
from service.logging import configure
from service.runtime import Runtime
from tests.conftest import API_KEY, Api, free_port


async def test_an_unknown_route_is_3007_not_an_unknown_verification(api: Api):
    for path, key in (("/v1/no-such-route", "dev"), ("/nothing-here", None)):
        status, body = await api.call("GET", path, key=key) if key is None else await api.call("GET", path)
        assert (status, body["error"]["code"]) == (404, "3007"), body
    status, body = await api.call("GET", "/v1/verifications/0000ffffffffffffffffffffffff")
    assert (status, body["error"]["code"]) == (404, "4001")


async def test_a_wrong_method_is_3008_with_allow(api: Api):
    async with api.session.delete(api.base + "/v1/verifications",
                                  headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        body = await resp.json()
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.content_type == "application/json"
    assert body["error"]["code"] == "3008"
    assert "POST" in body["error"]["description"]


async def test_an_oversize_idempotency_key_is_3001(api: Api):
    status, body = await api.call("POST", "/v1/verifications", {}, headers={"Idempotency-Key": "k" * 256})
    assert (status, body["error"]["code"]) == (400, "3001")
    assert "Idempotency-Key" in body["error"]["description"]


async def test_an_unsigned_webhook_is_counted_not_logged(api: Api):
    stream = io.StringIO()
    configure(stream=stream)
    try:
        for _ in range(3):
            status, _ = await api.call("POST", "/v1/providers/simulator/events", {"event_id": "e"}, key=None)
            assert status == 401
        status, _ = await api.call("POST", "/v1/providers/nobody/events", {"event_id": "e"}, key=None)
        assert status == 401
    finally:
        structlog.reset_defaults()
    assert "bad_signature" not in stream.getvalue()
    async with api.session.get(api.base + "/metrics") as resp:
        text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("veriflow_webhook_refusals_total", (("reason", "bad_signature"),))] == 3
    assert samples[("veriflow_webhook_refusals_total", (("reason", "unknown_provider"),))] == 1


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[int]:
    """The application behind the runner `veriflow serve` uses."""
    runner = EnvelopedRunner(build_app(runtime, simulator=False), runtime.catalog, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def raw(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /v1/verifications HTTP/1.1\r\nHost: x\r\nIdempotency-Key: " + b"k" * 9000 + b"\r\n\r\n",
    b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
], ids=["oversize-header", "oversize-idempotency-key", "oversize-request-line", "malformed-header"])
async def test_malformed_http_answers_the_json_envelope(served: int, request_bytes: bytes):
    stream = io.StringIO()
    configure(stream=stream)
    try:
        status, headers, body = await raw(served, request_bytes)
    finally:
        structlog.reset_defaults()
    assert status.split()[1] == "400", status
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "3001"
    assert error["description"]
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]  # all JSON
    assert [(r["event"], r["level"], r["status"]) for r in records] == [("http.malformed_request", "warning", 400)]
    assert "Traceback" not in stream.getvalue()


def test_standard_library_loggers_write_json():
    stream = io.StringIO()
    configure(stream=stream)
    try:
        logging.getLogger("aiohttp.access").warning("GET %s", "/x")
    finally:
        structlog.reset_defaults()
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert (record["event"], record["logger"], record["level"]) == ("GET /x", "aiohttp.access", "warning")


def test_a_kept_answer_whose_sealed_body_begins_with_a_brace_reads_back(runtime: Runtime):
    """The raw sealed body may begin with any byte; "{" once read as the former JSON form (500)."""
    for attempt in range(5000):
        body = f'{{"n": {attempt}}}'.encode()
        record = held_keys.answer("ab" * 32, 200, body, runtime.secrets, "slot")
        held = held_keys.decode(record)
        if (held.body or b"")[:1] == b"{":
            assert held_keys.answer_body(held, runtime.secrets, "slot") == body
            return
    pytest.fail("no sealed body began with a brace")
