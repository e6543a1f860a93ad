"""Schemathesis hooks for tests/test_schemathesis.py.

A generated start may carry a callback URL the server accepts (a DNS name): the service would then
call it back, and the test must not reach beyond the loopback interface. Such a valid, optional
field is dropped from the body; a body whose callback URL is invalid keeps it, so negative cases
stay negative.

Generated values repeat ("0" again and again): a valid Idempotency-Key or tx_id is made unique,
still valid, so that most valid starts are not the 409 of a reused key or a live tx_id, and the
stateful phase has verifications to follow its links from. Invalid ones are left as they are.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis

from service.api.schemas import CALLBACK_URL, IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY, MAX_TEXT, NON_BLANK

CALLABLE = re.compile(CALLBACK_URL)
KEY = re.compile(IDEMPOTENCY_KEY)
TEXT = re.compile(NON_BLANK)
_serial = itertools.count()


def unique(value: str, limit: int) -> str:
    suffix = f"-u{next(_serial)}"
    return value.strip()[: limit - len(suffix)] + suffix


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    url = body.get("callback_url")
    if isinstance(url, str) and CALLABLE.search(url):
        body = {name: value for name, value in body.items() if name != "callback_url"}
    tx_id = body.get("tx_id")
    if isinstance(tx_id, str) and TEXT.search(tx_id) and len(tx_id) <= MAX_TEXT:
        body = {**body, "tx_id": unique(tx_id, MAX_TEXT)}
    return body


@schemathesis.hook
def map_headers(context: Any, headers: Any) -> Any:
    key = headers.get("Idempotency-Key") if headers is not None else None
    if isinstance(key, str) and KEY.search(key) and len(key) <= MAX_IDEMPOTENCY_KEY:
        headers["Idempotency-Key"] = unique(key, MAX_IDEMPOTENCY_KEY)
    return headers
