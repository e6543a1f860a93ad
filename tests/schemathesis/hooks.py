"""Schemathesis hooks for tests/test_schemathesis.py.

A generated start may carry a callback URL the server accepts (a DNS name): the service would then
call it back, and the test must not reach beyond the loopback interface. Such a valid, optional
field is dropped from the body; a body whose callback URL is invalid keeps it, so negative cases
stay negative.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from service.api.schemas import CALLBACK_URL

CALLABLE = re.compile(CALLBACK_URL)


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    url = body.get("callback_url") if isinstance(body, dict) else None
    if isinstance(url, str) and CALLABLE.search(url):
        return {name: value for name, value in body.items() if name != "callback_url"}
    return body
