"""structlog JSON logs. Each line carries the verification id bound for the request or job;
personal data and codes are masked by a processor, whatever the call site passes."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SENSITIVE = {"name", "birth", "phone", "subject", "code", "otp", "key_token", "api_key", "secret",
             "authorization", "text", "digits"}


JSON_HANDLER = "veriflow_json"  # marks the handler configure() installed, so a second call replaces it


def mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: mask_field(k, v) for k, v in value.items()}
    return "***"


def mask_field(key: str, value: Any) -> Any:
    if key in SENSITIVE:
        if key == "phone" and isinstance(value, str) and len(value) >= 4:  # noqa: PLR2004
            return "***" + value[-4:]  # enough to tell numbers apart, not to call one
        return mask(value)
    if isinstance(value, dict):
        return {k: mask_field(k, v) for k, v in value.items()}
    return value


def mask_personal_data(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        event[key] = mask_field(key, event[key])
    return event


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines to stdout (or `stream`, for tests, which then must not be cached).

    The standard library's loggers (aiohttp's own: `aiohttp.server` for malformed HTTP,
    `aiohttp.access`, `aiohttp.web`) write JSON lines too, through structlog's formatter."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, JSON_HANDLER, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_personal_data,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    ))
    setattr(handler, JSON_HANDLER, True)
    root.addHandler(handler)
    root.setLevel(level)
    # transitions reports every callback at INFO: noise in the logs, and a cost on every request.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_personal_data,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=stream is None,
    )
